"""`actorlearner sweep`: a real grid, each trial a whole (evaluate-only) run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from actorlearner.config import ConfigError
from actorlearner.pipeline.sweep import headline_metrics, parse_grid, trial_overrides

ROOT = Path(__file__).resolve().parents[2]


def test_grid_parsing_and_product():
    grid = parse_grid(["train.kl_coef=0.01,0.05", "train.max_turns=1,2,3"])
    trials = trial_overrides(grid)
    assert len(trials) == 6
    assert {"train.kl_coef": "0.05", "train.max_turns": "2"} in trials
    with pytest.raises(ConfigError, match="key.sub=v1,v2"):
        parse_grid(["train.kl_coef"])


def test_every_grid_point_loads_before_any_trial(tmp_path):
    from actorlearner.pipeline.sweep import run_sweep

    with pytest.raises(
        ConfigError, match="train.rewards: could not convert string to float: .heavy."
    ):
        run_sweep(
            str(ROOT / "configs/tiny_cpu.yaml"), ["train.rewards.1.weight=0.5,heavy"], [], "bad"
        )


def test_trial_names_keep_list_indices_and_train_only_runs_report_rewards():
    from actorlearner.pipeline.sweep import _short

    assert _short("train.rewards.1.weight") == "rewards.1.weight"
    assert _short("evaluate.rounds") == "rounds"
    summary = {"train": {"reward_last": 0.5, "reward_last_half": 0.25, "iterations": 2}}
    assert headline_metrics(summary) == {
        "train/reward_last": 0.5,
        "train/reward_last_half": 0.25,
    }


def test_sweep_runs_trials_and_writes_table(tiny_model_dir, tmp_path, monkeypatch):
    import ray

    from actorlearner.pipeline.sweep import results_table, run_sweep

    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    base = [
        f"model.path={tiny_model_dir}",
        f"output_dir={tmp_path / 'runs'}",
        "stages=[evaluate]",
        "data.num_synthetic_test=2",
        "evaluate.max_new_tokens=8",
    ]
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        results = run_sweep("configs/tiny_cpu.yaml", ["evaluate.rounds=1,2"], base, "grid")
    finally:
        ray.shutdown()
    assert sorted(r.overrides["evaluate.rounds"] for r in results) == ["1", "2"]
    for r in results:
        rounds = int(r.overrides["evaluate.rounds"])
        assert f"synthetic:test/pass@1@r{rounds}" in r.metrics
        summary = json.loads(
            (tmp_path / "runs" / "grid" / f"rounds={rounds}" / "summary.json").read_text()
        )
        assert headline_metrics(summary) == pytest.approx(r.metrics)
    assert "evaluate.rounds" in results_table(results)
