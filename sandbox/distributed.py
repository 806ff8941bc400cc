"""The sandbox from Ray actors, with a cluster-wide limit on concurrent executions.

Programs run in a local `SandboxPool` on the caller's node (no code or results
travel through the object store); a named Ray actor hands out permits so that all
callers together never run more than `max_concurrent` programs at once, however many
rollout actors share the cluster.

    limiter = create_limiter(max_concurrent=8)      # once, in the driver
    sb = ClusterSandbox(workers=2)                  # in each actor
    verdicts = sb.run_batch([(program, tests), ...])

Ray is imported lazily: the rest of `sandbox` does not need it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from sandbox.pool import Job, SandboxPool
from sandbox.types import Limits, TestCase, Verdict

LIMITER_NAME = "sandbox-concurrency"


class _Permits:
    """A counting semaphore with leases (a crashed holder's permits expire)."""

    def __init__(self, total: int, lease_s: float) -> None:
        if total < 1:
            raise ValueError(f"max_concurrent must be at least 1, got {total}")
        self.total, self.lease_s = total, lease_s
        self._leases: dict[int, tuple[int, float]] = {}  # id -> (permits, expiry)
        self._next = 0
        self._changed = asyncio.Event()

    def _free(self) -> int:
        now = time.monotonic()
        for lid in [lid for lid, (_, exp) in self._leases.items() if exp < now]:
            del self._leases[lid]
        return self.total - sum(n for n, _ in self._leases.values())

    async def acquire(self, want: int) -> tuple[int, int]:
        """Wait for at least one free permit; take up to `want`. Returns (lease, granted)."""
        while (free := self._free()) < 1:
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=1.0)
            except asyncio.TimeoutError:
                pass  # re-check: leases may have expired
        granted = max(1, min(want, free))
        self._next += 1
        self._leases[self._next] = (granted, time.monotonic() + self.lease_s)
        return self._next, granted

    async def release(self, lease: int) -> None:
        self._leases.pop(lease, None)
        self._changed.set()

    async def stats(self) -> dict[str, int]:
        return {"total": self.total, "in_use": self.total - self._free()}


def _actor_class():
    import ray

    return ray.remote(num_cpus=0, max_concurrency=1000)(_Permits)


def create_limiter(
    max_concurrent: int | None = None, name: str = LIMITER_NAME, lease_s: float = 600.0
):
    """Create (or get) the cluster's named permit actor; default: one permit per cluster CPU."""
    import ray

    if max_concurrent is None:
        max_concurrent = int(ray.cluster_resources().get("CPU", 1))
    return _actor_class().options(name=name, get_if_exists=True).remote(max_concurrent, lease_s)


class ClusterSandbox:
    """`run`/`run_batch` like `sandbox`, but holding cluster permits while running."""

    def __init__(
        self,
        workers: int | None = None,
        limits: Limits | None = None,
        backend: str | None = None,
        limiter_name: str = LIMITER_NAME,
    ) -> None:
        import ray

        try:
            self._limiter = ray.get_actor(limiter_name)
        except ValueError:
            self._limiter = create_limiter(name=limiter_name)
        self.pool = SandboxPool(workers=workers, limits=limits, backend=backend)

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> ClusterSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, program: str, tests: Sequence[TestCase], limits: Limits | None = None) -> Verdict:
        return self.run_batch([(program, tests)], limits)[0]

    def run_batch(self, jobs: Sequence[Job], limits: Limits | None = None) -> list[Verdict]:
        """Run the jobs using at most as many workers as permits granted, then give them back."""
        import ray

        if not jobs:
            return []
        want = min(len(jobs), self.pool.size)
        lease: int
        granted: int
        lease, granted = ray.get(self._limiter.acquire.remote(want))
        try:
            return self._run_limited(jobs, limits, granted)
        finally:
            ray.get(self._limiter.release.remote(lease))

    def stats(self) -> dict[str, Any]:
        import ray

        return cast(dict[str, Any], ray.get(self._limiter.stats.remote()))

    def _run_limited(self, jobs: Sequence[Job], limits: Limits | None, width: int) -> list[Verdict]:
        if width >= self.pool.size:
            return self.pool.run_batch(jobs, limits)
        with ThreadPoolExecutor(width) as ex:
            return list(ex.map(lambda job: self.pool.run(job[0], job[1], limits), jobs))
