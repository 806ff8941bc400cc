"""Run configs: validation before any work, shipped recipes, dry runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from actorlearner.cli import app
from actorlearner.config import ConfigError, load_config
from actorlearner.pipeline.plan import check_fits, make_plan

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def test_overrides_apply_and_types_convert():
    cfg = load_config(ROOT / "configs/tiny_cpu.yaml", ["train.iterations=3", "model.lora.r=4"])
    assert cfg.train.iterations == 3 and cfg.model.lora.r == 4
    assert cfg.run_dir == Path("runs/tiny_cpu")


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.iteratons=3", "did you mean 'train.iterations'"),
        ("rollot.num_actors=2", "did you mean 'rollout'"),
        ("train.iterations=many", "could not be converted to Integer"),
        ("rollout.engine=tgi", "rollout.engine='tgi' is not one of hf, vllm"),
        ("rollout.num_actors=0", "rollout.num_actors must be >= 1"),
        ("stages=[collect,fly]", "unknown stage"),
        ("no_equals_sign", "must look like key.sub=value"),
        ("train.advantage=vtrace", "train.advantage='vtrace' is not one of gae, group"),
        ("train.group_size=5", "not a multiple of train.group_size=5"),
        ("train.group_size=1", "needs train.group_size >= 2"),  # tiny uses group
    ],
)
def test_bad_overrides_name_the_problem(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(ROOT / "configs/tiny_cpu.yaml", [override])


def test_unknown_key_in_yaml_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sft:\n  epoch: 2\n")
    with pytest.raises(ConfigError, match="did you mean 'sft.epochs'"):
        load_config(bad)


def test_missing_config_file():
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("configs/nope.yaml")


def test_impossible_resources_fail_up_front():
    cfg = load_config(ROOT / "configs/codellama-7b.yaml")
    plan = make_plan(cfg)
    assert plan.gpus == 8
    with pytest.raises(ConfigError, match="needs 8 GPUs but the cluster has 0"):
        check_fits(plan, {"CPU": 64.0})
    tiny = make_plan(load_config(ROOT / "configs/tiny_cpu.yaml"))
    check_fits(tiny, {"CPU": 2.0})
    with pytest.raises(ConfigError, match="needs 2 CPUs but the cluster has 1"):
        check_fits(tiny, {"CPU": 1.0})
    with pytest.raises(ConfigError, match="vLLM runs on GPUs"):
        make_plan(load_config(ROOT / "configs/tiny_cpu.yaml", ["rollout.engine=vllm"]))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_recipes_dry_run(path):
    result = CliRunner().invoke(app, ["pipeline", "--config", str(path), "--dry-run"])
    cfg = load_config(path)
    if cfg.rollout.num_gpus_per_actor or cfg.learner.num_gpus_per_rank:  # GPU recipe, CPU host
        assert result.exit_code == 2, result.output
        assert "GPUs but the cluster has 0" in result.output
    else:
        assert result.exit_code == 0, result.output
    assert "# resource plan" in result.output
    assert f"name: {load_config(path).name}" in result.output


def test_gpu_recipes_use_vllm_and_colocation():
    qwen = load_config(ROOT / "configs/qwen2.5-coder-1.5b.yaml")
    assert qwen.rollout.engine == "vllm"
    assert make_plan(qwen).colocated(qwen)
    for name in ("codellama-7b", "starcoder-15b"):
        cfg = load_config(ROOT / f"configs/{name}.yaml")
        assert cfg.model.lora.enabled and cfg.train.gamma == 0.99
        assert (ROOT / cfg.learner.deepspeed_config).is_file(), cfg.learner.deepspeed_config


def test_cli_reports_config_errors_with_exit_code_2():
    result = CliRunner().invoke(
        app, ["pipeline", "-c", str(CONFIGS[0]), "sft.epohcs=1", "--dry-run"]
    )
    assert result.exit_code == 2
    assert "did you mean 'sft.epochs'" in result.output


def test_synthetic_split_sizes_come_from_the_data_settings():
    from actorlearner.pipeline.stages import load_problem_set

    cfg = load_config(
        "configs/tiny_cpu.yaml",
        ["data.num_synthetic_train=5", "data.num_synthetic_test=3", "data.num_synthetic_novel=2"],
    )
    sizes = {s: len(load_problem_set(cfg, f"synthetic:{s}")) for s in ("train", "test", "novel")}
    assert sizes == {"train": 5, "test": 3, "novel": 2}
    assert len(load_problem_set(cfg, "synthetic:test", split_size=4)) == 4


def test_each_learner_stage_gets_its_own_warmup():
    from actorlearner.pipeline.components import learner_config

    cfg = load_config("configs/tiny_cpu.yaml", ["sft.warmup_steps=10", "train.warmup_steps=4"])
    sft = learner_config(cfg, "base", cfg.run_dir / "checkpoints" / "sft", "sft")
    ppo = learner_config(cfg, "base", cfg.run_dir / "checkpoints" / "sft", "ppo")
    assert (sft.warmup_steps, ppo.warmup_steps) == (10, 4)
    assert (sft.lr, ppo.lr) == (cfg.sft.lr, cfg.train.lr)
