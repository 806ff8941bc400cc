"""GPU placement under Ray, on logical GPUs: which actor gets which GPU, and its LOCAL_RANK."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def ray_4gpu():
    import ray

    ray.init(num_cpus=2, num_gpus=4, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _probe(rank: int) -> tuple[str, int]:
    """What a rank sees inside its actor: its Ray GPU id and the LOCAL_RANK it would use."""
    import ray

    from actorlearner.learner.distributed import local_rank

    return str(ray.get_gpu_ids()[0]), local_rank(rank)


def test_local_rank_is_the_index_among_visible_gpus(ray_4gpu):
    ray = ray_4gpu
    probe = ray.remote(num_cpus=0, num_gpus=1)(_probe)
    seen = ray.get([probe.remote(r) for r in range(4)])
    assert sorted(gpu for gpu, _ in seen) == ["0", "1", "2", "3"]
    # each actor sees one GPU: device index 0 on every rank, never the global rank
    assert [lr for _, lr in seen] == [0, 0, 0, 0]


def test_local_rank_outside_ray_keeps_the_rank_on_cpu():
    from actorlearner.learner.distributed import local_rank

    assert local_rank(3) == 3
