"""CodeBLEU and explanation similarity off the generation path: one worker process.

The LeDex rewards are CPU-heavy Python (CodeBLEU parses and matches trees) and a
sentence-embedding forward. Run inline in env.step they hold the GIL and the cores the
policy generates on. Here every env copy of a process sends its requests to one shared
worker process (started on first use, with its own embedding model, loaded once): a
dispatcher thread takes whatever requests are waiting and sends them as one batch, so
the embeddings of a batch run in one forward, while generation continues in the client.
"""

from __future__ import annotations

import atexit
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from multiprocessing.connection import Connection
from typing import Any

MAX_BATCH = 64

Request = tuple[str, tuple[Any, ...]]  # ("codebleu", (code, refs, weights)) | ("cosine", ...)


def score_batch(requests: Sequence[Request]) -> list[float]:
    """Runs in the worker process: all cosine requests in one embedding pass, then CodeBLEU."""
    from envs.rewards.codebleu import max_codebleu
    from envs.rewards.similarity import embed_many, max_cosine

    by_model: dict[str, list[str]] = {}
    for kind, args in requests:
        if kind == "cosine":
            text, refs, model = args
            by_model.setdefault(model, []).extend([text, *refs])
    for model, texts in by_model.items():
        embed_many(model, texts)  # one batched forward; max_cosine then reads the cache
    out = []
    for kind, args in requests:
        out.append(max_codebleu(*args) if kind == "codebleu" else max_cosine(*args))
    return out


def serve(inbox: Connection, outbox: Connection) -> None:
    """The worker process's loop: a batch in, ("ok", scores) or ("error", exception) out."""
    import torch

    torch.set_num_threads(1)  # one core for the rewards; the client keeps its own
    while True:
        try:
            requests = inbox.recv()
        except EOFError:  # the client closed the pipe or died
            return
        try:
            outbox.send(("ok", score_batch(requests)))
        except Exception as exc:
            outbox.send(("error", exc))


class RewardWorker:
    """Client side: `submit(kind, *args)` returns a Future at once; `score` waits for it
    (blocking the calling env thread, not the process).

    The worker is a fresh interpreter (`python -m envs.rewards.worker`), not a fork of
    a process that runs torch threads, and it never re-imports the client's main module.
    """

    def __init__(self) -> None:
        self._requests: queue.Queue[tuple[Request, Future]] = queue.Queue()
        self.batches = 0  # batches sent, for tests and benchmarks
        self._closing = False
        self._start()
        threading.Thread(target=self._dispatch, daemon=True, name="reward-worker").start()

    def _start(self) -> None:
        req_r, req_w = os.pipe()
        res_r, res_w = os.pipe()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "envs.rewards.worker", str(req_r), str(res_w)],
            pass_fds=(req_r, res_w),
            env=env,
        )
        os.close(req_r)
        os.close(res_w)
        self._send = Connection(req_w, readable=False)
        self._recv = Connection(res_r, writable=False)

    def submit(self, kind: str, *args: Any) -> Future[float]:
        future: Future = Future()
        self._requests.put(((kind, args), future))
        return future

    def score(self, kind: str, *args: Any) -> float:
        return self.submit(kind, *args).result()

    def _dispatch(self) -> None:
        while True:
            batch = [self._requests.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._requests.get_nowait())
                except queue.Empty:
                    break
            self._run([r for r, _ in batch], [f for _, f in batch])

    def _run(self, requests: list[Request], futures: list[Future]) -> None:
        try:
            self._send.send(requests)
            status, payload = self._recv.recv()
        except (EOFError, OSError, TypeError) as exc:  # TypeError: a pipe closed under recv
            if self._closing:
                status, payload = "error", RuntimeError("the reward worker was closed")
            else:  # the worker died (e.g. out of memory): start anew
                self._stop()
                self._start()
                status, payload = "error", RuntimeError(f"reward worker died: {exc!r}")
        if status == "ok":
            self.batches += 1
            for f, r in zip(futures, payload, strict=True):
                f.set_result(r)
        else:  # a bad request fails its batch, not the dispatcher
            for f in futures:
                f.set_exception(payload)

    def close(self) -> None:
        self._closing = True
        self._stop()

    def _stop(self) -> None:
        self._send.close()
        self._recv.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()


_worker: RewardWorker | None = None
_lock = threading.Lock()


def reward_worker() -> RewardWorker:
    """This process's worker (one for all env copies), started on first use."""
    global _worker
    with _lock:
        if _worker is None:
            _worker = RewardWorker()
            atexit.register(_worker.close)
        return _worker


if __name__ == "__main__":
    serve(
        Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False)
    )
