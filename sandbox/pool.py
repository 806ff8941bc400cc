"""A pool of warm jailed workers that keeps every core busy.

Each worker owns one jailed zygote; a job borrows an idle worker, so at most
`workers` programs run at once. Threads only wait on pipes (the GIL is free), so a
plain thread pool is enough to drive the jails.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from sandbox.jail import choose_backend
from sandbox.types import Limits, TestCase, Verdict
from sandbox.verdict import build_verdict
from sandbox.worker import Worker, WorkerError

log = logging.getLogger(__name__)

Job = tuple[str, Sequence[TestCase]]


class SandboxPool:
    """`workers` jailed zygotes (default: one per CPU) behind `run` and `run_batch`."""

    def __init__(
        self,
        workers: int | None = None,
        limits: Limits | None = None,
        backend: str | None = None,
        max_memory_mb: int | None = None,
    ) -> None:
        self.backend = choose_backend(backend)
        self.limits = limits or Limits()
        self.size = max(1, workers or os.cpu_count() or 1)
        ceiling = max_memory_mb or max(self.limits.memory_mb, 4096)
        self._workers = [Worker(self.backend, ceiling) for _ in range(self.size)]
        self._idle: queue.SimpleQueue[Worker] = queue.SimpleQueue()
        for w in self._workers:
            self._idle.put(w)
        self._executor = ThreadPoolExecutor(self.size, thread_name_prefix="sandbox")
        self._closed = False
        self._lock = threading.Lock()

    def __enter__(self) -> SandboxPool:
        return self

    def start(self) -> SandboxPool:
        """Start every jail now (they otherwise start on first use)."""
        with ThreadPoolExecutor(self.size) as ex:
            list(ex.map(lambda w: w.alive or w.start(), self._workers))
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._executor.shutdown(wait=True)
        for w in self._workers:
            w.close()

    def run(self, program: str, tests: Sequence[TestCase], limits: Limits | None = None) -> Verdict:
        """Run one program against its tests; blocks until a worker is free."""
        if self._closed:
            raise RuntimeError("this SandboxPool is closed")
        limits = _check_limits(limits or self.limits)
        tests = list(tests)
        exprs = [_check_test(t) for t in tests]
        worker = self._idle.get()
        try:
            reply = self._run_on(worker, program, exprs, limits)
        finally:
            self._idle.put(worker)
        if reply is None:
            return Verdict(
                status="error",
                error_type="SandboxError",
                message="the sandbox failed twice on this program (see the log)",
                backend=self.backend,
                timeout_s=limits.timeout_s,
            )
        return build_verdict(tests, reply, limits, self.backend)

    def run_batch(
        self,
        jobs: Sequence[Job],
        limits: Limits | None = None,
        progress: bool = False,
        on_result: Callable[[int, Verdict], None] | None = None,
    ) -> list[Verdict]:
        """Run many (program, tests) jobs concurrently; verdicts in input order."""
        futures = [self._executor.submit(self.run, prog, tests, limits) for prog, tests in jobs]
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(futures), desc=f"sandbox ({self.backend})", unit="prog")
        results = []
        for i, fut in enumerate(futures):
            results.append(fut.result())
            if on_result is not None:
                on_result(i, results[-1])
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        return results

    def pids(self) -> list[int]:
        """Process ids of the jails (for memory measurements)."""
        return [w.pid for w in self._workers if w.pid is not None]

    def _run_on(
        self, worker: Worker, program: str, exprs: list[str], limits: Limits
    ) -> dict | None:
        for attempt in (1, 2):
            try:
                return worker.run_job(program, exprs, limits)
            except WorkerError as exc:
                log.warning("sandbox worker failed (attempt %d): %s", attempt, exc)
        return None


def _check_test(test: TestCase) -> str:
    if not isinstance(test, TestCase):
        raise TypeError(f"tests must be sandbox.TestCase objects, got {type(test).__name__}")
    if not isinstance(test.expr, str) or not test.expr.strip():
        raise ValueError(f"TestCase.expr must be a non-empty expression string, got {test.expr!r}")
    return test.expr


def _check_limits(limits: Limits) -> Limits:
    if not isinstance(limits, Limits):
        raise TypeError(f"limits must be a sandbox.Limits, got {type(limits).__name__}")
    problems = [
        f"{name}={getattr(limits, name)!r} (must be >= {low})"
        for name, low in [
            ("timeout_s", 0.01),
            ("cpu_s", 1),
            ("memory_mb", 32),
            ("output_bytes", 0),
            ("file_bytes", 0),
            ("scratch_bytes", 0),
            ("max_procs", 1),
        ]
        if not getattr(limits, name) >= low
    ]
    if problems:
        raise ValueError(f"invalid sandbox Limits: {', '.join(problems)}")
    return limits
