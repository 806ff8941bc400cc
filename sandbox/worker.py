"""One warm jailed zygote and the parent's side of its protocol.

The zygote starts once (firejail + interpreter start-up, ~0.1 s) and then forks a
child per job, so a run costs a fork instead of a jail. If the zygote dies or stops
answering, the worker kills it and starts a fresh one for the next job.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from typing import Any

from sandbox.jail import MAX_FILE_BYTES, harness_source, zygote_command
from sandbox.seccomp import job_filter
from sandbox.types import Limits

# Fresh uids come from a range no real account uses; one per job.
UID_RANGE = (1 << 20, 1 << 30)
MAX_RESULT_BYTES = 16 << 20  # reported values per program, all tests together
REPLY_SLACK_S = 30.0  # the zygote enforces the timeout; this only catches a hung zygote


class WorkerError(RuntimeError):
    """The jailed zygote failed (start-up failure, crash, or protocol error)."""


def job_rlimits(limits: Limits) -> dict[str, Any]:
    """rlimits a job child sets on itself before running candidate code."""
    return {
        "RLIMIT_AS": limits.memory_mb << 20,
        "RLIMIT_CPU": [max(1, int(limits.cpu_s)), max(1, int(limits.cpu_s)) + 1],
        "RLIMIT_FSIZE": limits.file_bytes,
        "RLIMIT_NPROC": max(1, limits.max_procs),
        "RLIMIT_CORE": 0,
        "RLIMIT_NOFILE": 256,
    }


class Worker:
    """A jailed harness zygote; `run_job` is not thread-safe (the pool serializes)."""

    def __init__(self, backend: str, max_memory_mb: int = 4096) -> None:
        self.backend = backend
        self.max_memory_mb = max_memory_mb
        self.privileged = os.geteuid() == 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._owner = os.getpid()
        self.jobs_run = 0

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        self.close()  # a dead predecessor, if any
        cmd = zygote_command(self.backend, self.max_memory_mb << 20)
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env=_jail_env(),
        )
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.write(harness_source())
            self._send({"seccomp": job_filter().hex()})
            hello = self._recv(timeout=30.0)
        except (WorkerError, OSError) as exc:
            err = self._stderr()
            self.close()
            raise WorkerError(f"the {self.backend} sandbox failed to start: {exc}\n{err}") from None
        if not hello.get("ready"):
            self.close()
            raise WorkerError(f"unexpected greeting from the sandbox: {hello!r}")

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and self._owner == os.getpid():
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            for f in (proc.stdin, proc.stdout, proc.stderr):
                if f is not None:
                    f.close()

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- jobs --------------------------------------------------------------------------
    def run_job(self, program: str, exprs: list[str], limits: Limits) -> dict[str, Any]:
        """Run one program on its test expressions; the raw (untrusted) reply."""
        if limits.memory_mb > self.max_memory_mb:
            raise ValueError(
                f"Limits.memory_mb={limits.memory_mb} exceeds this pool's ceiling "
                f"{self.max_memory_mb}; create the pool with limits that allow it"
            )
        if limits.file_bytes > MAX_FILE_BYTES:
            raise ValueError(
                f"Limits.file_bytes={limits.file_bytes} exceeds the sandbox's bound {MAX_FILE_BYTES}"
            )
        if self._owner != os.getpid():  # we are a forked copy: the jail is our parent's
            self._proc, self._owner = None, os.getpid()
        if not self.alive:
            self.start()
        job = {
            "program": program,
            "exprs": exprs,
            "timeout_s": limits.timeout_s,
            "rlimits": job_rlimits(limits),
            "uid": random.randrange(*UID_RANGE) if self.privileged else None,
            "output_bytes": limits.output_bytes,
            "scratch_bytes": limits.scratch_bytes,
            "max_result_bytes": MAX_RESULT_BYTES,
        }
        try:
            self._send(job)
            reply = self._recv(timeout=limits.timeout_s + REPLY_SLACK_S)
        except WorkerError:
            self.close()  # a fresh zygote serves the next job
            raise
        self.jobs_run += 1
        if "harness_error" in reply:
            self.close()  # its job template may be mid-job: a fresh jail serves the next
            raise WorkerError(f"sandbox harness error: {reply['harness_error']}")
        return reply

    def _send(self, obj: dict[str, Any]) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        data = json.dumps(obj).encode()
        try:
            self._proc.stdin.write(len(data).to_bytes(4, "big") + data)
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise WorkerError(f"the sandbox zygote is gone ({exc})") from None

    def _recv(self, timeout: float) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        head = _read_exact(fd, 4, deadline)
        body = _read_exact(fd, int.from_bytes(head, "big"), deadline)
        return json.loads(body)

    def _stderr(self) -> str:
        proc = self._proc
        if proc is None or proc.stderr is None:
            return ""
        try:
            proc.wait(timeout=2)
            return proc.stderr.read(8192).decode(errors="replace")
        except subprocess.TimeoutExpired:
            return ""

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None


def _jail_env() -> dict[str, str]:
    """The jail inherits no secrets (API keys, tokens) from this process's environment."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "PYTHONHASHSEED": "0",
    }


def _read_exact(fd: int, n: int, deadline: float) -> bytes:
    import select

    buf = bytearray()
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise WorkerError("timed out waiting for the sandbox zygote")
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise WorkerError("the sandbox zygote exited")
        buf += chunk
    return bytes(buf)
