"""The cluster-wide limit holds across Ray actors that each run their own jails."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray")

from sandbox import TestCase  # noqa: E402
from sandbox.distributed import ClusterSandbox, create_limiter  # noqa: E402

# Reports when it ran (the jail shares the host's clock).
TIMED = "import time\nstart = time.time()\ntime.sleep(0.3)\nend = time.time()\n"


@pytest.fixture(scope="module")
def cluster():
    for attempt in (1, 2):  # a busy machine can miss Ray's 30 s node start-up window
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            break
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
    yield
    ray.shutdown()


@ray.remote(num_cpus=0)
class Runner:
    def __init__(self, limiter_name: str) -> None:
        self.sb = ClusterSandbox(workers=2, limiter_name=limiter_name)

    def intervals(self, n: int) -> list[tuple[float, float]]:
        verdicts = self.sb.run_batch([(TIMED, [TestCase("(start, end)")])] * n)
        assert all(v.passed for v in verdicts), verdicts
        return [v.outcomes[0].value for v in verdicts]

    def close(self) -> None:
        self.sb.close()


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    depth = best = 0
    for _, step in events:
        depth += step
        best = max(best, depth)
    return best


@pytest.mark.parametrize("permits", [1, 2])
def test_cluster_limit_bounds_concurrent_runs(cluster, permits):
    name = f"limiter-{permits}"
    limiter = create_limiter(permits, name=name)
    runners = [Runner.remote(name) for _ in range(2)]
    try:
        results = ray.get([r.intervals.remote(2) for r in runners])
        stats = ray.get(limiter.stats.remote())
    finally:
        ray.get([r.close.remote() for r in runners])
    intervals = [iv for part in results for iv in part]
    assert len(intervals) == 4
    # 2 actors x 2 workers could run 4 at once; the limiter allows `permits`.
    assert max_overlap(intervals) == permits
    assert stats == {"total": permits, "in_use": 0}
