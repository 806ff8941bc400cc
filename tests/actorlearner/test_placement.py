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


ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def _plan(name: str, *overrides: str):
    from actorlearner.config import load_config
    from actorlearner.pipeline.plan import make_plan

    return make_plan(load_config(ROOT / f"configs/{name}.yaml", list(overrides)))


def test_colocated_recipe_puts_one_rank_and_one_actor_on_each_gpu():
    layout = _plan("qwen2.5-coder-1.5b").layout
    assert layout is not None
    assert [b["GPU"] for b in layout.bundles] == [1.0] * 4
    assert layout.learner == layout.rollout == [0, 1, 2, 3]
    assert _plan("qwen2.5-coder-1.5b").gpus == 4


def test_whole_gpu_recipes_give_every_rank_and_actor_its_own_gpu():
    layout = _plan("starcoder-15b").layout
    assert layout is not None
    assert layout.learner == [0, 1, 2, 3] and layout.rollout == [4, 5, 6, 7]


def test_shares_that_overflow_a_gpu_are_refused():
    from actorlearner.config import ConfigError

    with pytest.raises(ConfigError, match="add up to more than 1"):
        _plan("qwen2.5-coder-1.5b", "rollout.num_gpus_per_actor=0.6")


def test_vllm_memory_fraction_follows_the_share():
    from actorlearner.placement import vllm_memory_fraction
    from actorlearner.rollout.config import RolloutConfig
    from actorlearner.rollout.group import actor_config

    assert vllm_memory_fraction(0.4) == 0.4
    assert vllm_memory_fraction(1.0) == 0.9
    cfg = RolloutConfig(model_path="m", engine="vllm", num_gpus_per_actor=0.4)
    kw = [actor_config(cfg, i).engine_kwargs for i in range(2)]
    assert kw[0]["gpu_memory_utilization"] == 0.4
    assert kw[0]["seed"] != kw[1]["seed"]  # actors draw different samples


def _gpu_of() -> str:
    import ray

    return str(ray.get_gpu_ids()[0])


def test_placement_group_gives_rank_i_and_actor_i_the_same_gpu(ray_4gpu):
    from actorlearner.placement import Placement

    ray = ray_4gpu
    layout = _plan("qwen2.5-coder-1.5b").layout
    assert layout is not None
    for b in layout.bundles:
        b["CPU"] = 0.25  # logical CPUs of this 2-core host; GPUs as the recipe asks
    placement = Placement(layout)
    try:
        rank = ray.remote(num_cpus=0.1, num_gpus=0.5)(_gpu_of)
        actor = ray.remote(num_cpus=0.1, num_gpus=0.4)(_gpu_of)
        ranks = ray.get(
            [
                rank.options(scheduling_strategy=placement.strategy("learner", i)).remote()
                for i in range(4)
            ]
        )
        actors = ray.get(
            [
                actor.options(scheduling_strategy=placement.strategy("rollout", i)).remote()
                for i in range(4)
            ]
        )
    finally:
        placement.remove()
    assert sorted(ranks) == ["0", "1", "2", "3"]  # never two ranks on one GPU
    assert actors == ranks  # actor i shares rank i's GPU


def test_dry_run_checks_the_plan_against_the_cluster_it_would_use():
    from typer.testing import CliRunner

    from actorlearner.cli import app

    args = ["pipeline", "-c", str(ROOT / "configs/tiny_cpu.yaml"), "--dry-run"]
    ok = CliRunner().invoke(app, args)
    assert ok.exit_code == 0, ok.output
    bad = CliRunner().invoke(app, [*args, "rollout.num_actors=8"])
    assert bad.exit_code == 2
    errors = [line for line in bad.output.splitlines() if "config error" in line]
    assert len(errors) == 1 and "needs 9 CPUs but the cluster has 2" in errors[0]
