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


def test_wrong_type_names_field_value_and_type():
    with pytest.raises(ConfigError) as err:
        load_config(ROOT / "configs/tiny_cpu.yaml", ["train.kl_coef=abc"])
    assert str(err.value) == (
        "train.kl_coef: Value 'abc' of type 'str' could not be converted to Float"
    )


def test_reward_presets_expand_and_list_items_can_be_overridden():
    from envs.rewards import PRESETS

    cfg = load_config(ROOT / "configs/tiny_cpu.yaml", ["train.rewards=tests"])
    assert cfg.train.rewards == PRESETS["tests"]
    cfg = load_config(ROOT / "configs/tiny_cpu.yaml", ["train.rewards.1.weight=2.5"])
    assert [t["name"] for t in cfg.train.rewards] == [t["name"] for t in PRESETS["ledex"]]
    assert cfg.train.rewards[1]["weight"] == 2.5
    terms = "train.rewards=[{name: pass_rate, weight: 1.0}, {name: format, options: {}}]"
    cfg = load_config(ROOT / "configs/tiny_cpu.yaml", [terms])
    assert [t["name"] for t in cfg.train.rewards] == ["pass_rate", "format"]


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "train.rewards=[{name: pass_rat}]",
            "unknown reward term 'pass_rat'; available: all_passed,",
        ),
        ("train.rewards=ledexx", "train.rewards='ledexx' is not a preset (ledex, sparse, tests)"),
        ("env.id=Nope-v0", "env.id='Nope-v0' is not a registered Gymnasium id"),
        ("imports=[no_such_module_here]", "imports: cannot import 'no_such_module_here'"),
        ("train.temperature=0.5", "set rollout.temperature"),
        ("train.off_policy=vtrace", "train.off_policy='vtrace' is not one of none"),
    ],
)
def test_registry_and_derived_key_errors_are_one_line(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(ROOT / "configs/tiny_cpu.yaml", [override])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_imports_register_terms_and_envs_before_validation(tmp_path, monkeypatch):
    (tmp_path / "cfg_user_mod.py").write_text(
        "import gymnasium\n"
        "from envs.rewards import reward_term\n"
        "@reward_term('always_one')\n"
        "def always_one(ctx):\n    return 1.0\n"
        "gymnasium.register(id='CfgUserEnv-v0', entry_point='envs.code_refine:CodeRefineEnv')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = load_config(
        ROOT / "configs/tiny_cpu.yaml",
        ["imports=[cfg_user_mod]", "env.id=CfgUserEnv-v0", "train.rewards=[{name: always_one}]"],
    )
    assert cfg.env.id == "CfgUserEnv-v0" and cfg.train.rewards == [{"name": "always_one"}]


def _settable(value):
    """A different value of the same type, to prove an override reaches its component."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    return None


def test_every_component_setting_reaches_its_component():
    import dataclasses

    from actorlearner.collect.config import CollectSettings, from_run_config
    from actorlearner.learner.config import LearnerSettings, LoRAConfig, PPOConfig, SFTConfig
    from actorlearner.pipeline.components import learner_config, rollout_config
    from actorlearner.rollout.config import RolloutSettings

    sections = [
        ("learner", LearnerSettings, lambda lc, rc, cc: lc),
        ("model.lora", LoRAConfig, lambda lc, rc, cc: lc.lora),
        ("train", PPOConfig, lambda lc, rc, cc: lc.ppo),
        ("sft", SFTConfig, lambda lc, rc, cc: lc.sft),
        ("rollout", RolloutSettings, lambda lc, rc, cc: rc),
        ("collect", CollectSettings, lambda lc, rc, cc: cc),
    ]
    changed = {}  # every bool, int and float setting, changed at once
    for prefix, cls, component in sections:
        for f in dataclasses.fields(cls):
            new = _settable(getattr(cls(), f.name))
            if new is not None and f"{prefix}.{f.name}" != "train.temperature":
                changed[(prefix, f.name)] = (new, component)
    overrides = [f"{prefix}.{name}={new}" for (prefix, name), (new, _) in changed.items()]
    cfg = load_config(ROOT / "configs/tiny_cpu.yaml", overrides)
    built = (
        learner_config(cfg, "m", Path("ckpt"), "ppo"),
        rollout_config(cfg, "m", [], None),
        from_run_config(cfg, "out", "m"),
    )
    for (prefix, name), (new, component) in changed.items():
        assert getattr(component(*built), name) == new, f"{prefix}.{name}"
    assert len(changed) > 40


def test_each_stage_learns_at_its_own_rate_and_temperature_follows_sampling():
    from actorlearner.pipeline.components import learner_config

    cfg = load_config(
        "configs/tiny_cpu.yaml",
        ["sft.lr=0.001", "train.lr=0.00002", "rollout.temperature=0.7", "train.kl_target=0.02"],
    )
    sft = learner_config(cfg, "m", Path("ckpt"), "sft")
    ppo = learner_config(cfg, "m", Path("ckpt"), "ppo")
    assert (sft.lr, ppo.lr, ppo.ppo.temperature, ppo.ppo.kl_target) == (0.001, 2e-5, 0.7, 0.02)


def test_dry_run_prints_the_expanded_reward_terms():
    result = CliRunner().invoke(
        app,
        ["pipeline", "-c", str(ROOT / "configs/tiny_cpu.yaml"), "train.rewards=tests", "--dry-run"],
    )
    assert result.exit_code == 0, result.output
    terms = result.output.split("# reward terms")[1].split("# resource plan")[0]
    assert "0: pass_rate x 1" in terms and "3: turn_cost x 0.1" in terms


def test_collect_and_sft_loop_read_configs_the_same_way(tmp_path):
    import subprocess
    import sys

    result = CliRunner().invoke(app, ["collect", "-c", str(CONFIGS[0]), "collect.refinr=policy"])
    assert result.exit_code == 2 and "did you mean 'collect.refiner'" in result.output
    bad = tmp_path / "learner.yaml"
    bad.write_text("micro_batch_size: many\n")
    res = subprocess.run(
        [sys.executable, "-m", "actorlearner.learner.sft_loop", str(bad)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 2
    assert "micro_batch_size: Value 'many' of type 'str' could not be converted" in res.stderr


def test_env_settings_reach_training_and_evaluation():
    from actorlearner.pipeline.components import rollout_config
    from actorlearner.pipeline.stages import eval_env_kwargs

    cfg = load_config(
        ROOT / "configs/tiny_cpu.yaml", ["env.kwargs={max_text_chars: 9000, max_turns: 5}"]
    )
    rc = rollout_config(cfg, "m", ["p"], "pool.jsonl")
    assert rc.env_id == "CodeRefine-v0"
    assert rc.env_kwargs["max_text_chars"] == 9000 and rc.env_kwargs["max_turns"] == 5
    assert rc.env_kwargs["rewards"] == cfg.train.rewards and rc.env_kwargs["pool"] == "pool.jsonl"
    assert eval_env_kwargs(cfg) == {"max_text_chars": 9000}  # turns are evaluate.rounds


def test_a_runs_written_config_loads_again(tmp_path):
    """runs/<name>/config.yaml reruns as it is: keys the run derives are not written."""
    from actorlearner.config import load_config, to_yaml

    cfg = load_config("configs/tiny_cpu.yaml", ["train.iterations=3", "rollout.temperature=0.7"])
    written = tmp_path / "config.yaml"
    written.write_text(to_yaml(cfg))
    assert "temperature: 0.7" in written.read_text()
    again = load_config(written)
    assert again == cfg and again.train.iterations == 3
