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
import multiprocessing
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
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


class RewardWorker:
    """Client side: `score(kind, *args)` blocks the calling env thread, not the process."""

    def __init__(self) -> None:
        self._ctx = multiprocessing.get_context("spawn")  # the client may run many threads
        self._pool = ProcessPoolExecutor(1, mp_context=self._ctx)
        self._requests: queue.Queue[tuple[Request, Future]] = queue.Queue()
        self.batches = 0  # batches sent, for tests and benchmarks
        threading.Thread(target=self._dispatch, daemon=True, name="reward-worker").start()

    def score(self, kind: str, *args: Any) -> float:
        future: Future = Future()
        self._requests.put(((kind, args), future))
        return future.result()

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
            results = self._pool.submit(score_batch, requests).result()
        except BrokenProcessPool as exc:  # the worker died (e.g. out of memory): start anew
            self._pool = ProcessPoolExecutor(1, mp_context=self._ctx)
            for f in futures:
                f.set_exception(exc)
            return
        except Exception as exc:  # a bad request fails its batch, not the dispatcher
            for f in futures:
                f.set_exception(exc)
            return
        self.batches += 1
        for f, r in zip(futures, results, strict=True):
            f.set_result(r)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


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
