"""`actorlearner sweep`: Ray Tune grid over config overrides; each trial is a whole run.

Any key a config has can be swept, list items included: `train.rewards.1.weight=0.5,2`
(a preset is expanded before overrides apply), `train.max_turns=1,2`, `evaluate.rounds=1,3`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actorlearner.config import ConfigError, load_config


@dataclass
class SweepResult:
    overrides: dict[str, str]
    metrics: dict[str, float]


def parse_grid(params: list[str]) -> dict[str, list[str]]:
    """`["train.kl_coef=0.01,0.05", "train.max_turns=1,2"]` -> {key: [values]}
    (values are scalars: a value with a comma cannot be told from two values)."""
    grid: dict[str, list[str]] = {}
    for p in params:
        key, sep, values = p.partition("=")
        if not sep or not values:
            raise ConfigError(f"sweep parameter {p!r} must look like key.sub=v1,v2")
        grid[key] = values.split(",")
    return grid


def trial_overrides(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())]


def headline_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """Flatten summary.json's last stage into `bench/pass@1@rR` numbers for the table, and
    the PPO stage's reward (last iteration, last half mean) and solved share."""
    results = summary.get("results", {})
    out: dict[str, float] = {}
    for bench, m in results[list(results)[-1]].items() if results else ():
        out[f"{bench}/pass@1@r0"] = m["pass@1"][0]
        out[f"{bench}/pass@1@r{len(m['pass@1']) - 1}"] = m["pass@1"][-1]
    train = summary.get("train", {})
    for key in ("reward_last", "reward_last_half", "solved_last_half"):
        if key in train:
            out[f"train/{key}"] = train[key]
    return out


def _short(key: str) -> str:
    """A key's trial-name part: its last name, with a list index kept (`rewards.1.weight`)."""
    parts = key.split(".")
    tail = parts[-3:] if len(parts) >= 3 and parts[-2].isdigit() else parts[-1:]
    return ".".join(tail)


def _trial(config_path: str, base_overrides: list[str], sweep_name: str, params: dict[str, str]):
    from ray import tune

    from actorlearner.pipeline.run import run_pipeline
    from actorlearner.pipeline.state import RunState

    tag = "-".join(f"{_short(k)}={v}" for k, v in params.items())
    overrides = base_overrides + [f"{k}={v}" for k, v in params.items()]
    overrides.append(f"name={sweep_name}/{tag}")
    cfg = load_config(config_path, overrides)
    summary = run_pipeline(cfg)
    if "train" not in summary:  # no evaluation ran: the PPO stage's own numbers
        summary = {**summary, "train": RunState(cfg.run_dir).output("train")}
    tune.report(headline_metrics(summary) or {"done": 1.0})


def run_sweep(
    config_path: str, params: list[str], base_overrides: list[str], name: str
) -> list[SweepResult]:
    """Run every grid point as a Tune trial (one at a time: each trial owns the cluster)."""
    import ray
    from ray import tune

    grid = parse_grid(params)
    trials = trial_overrides(grid)
    for trial in trials:  # every grid point must load before any trial runs
        load_config(config_path, base_overrides + [f"{k}={v}" for k, v in trial.items()])
    first = load_config(config_path, base_overrides + [f"{k}={v}" for k, v in trials[0].items()])
    # Trials run in their own directories: pin the config and the outputs to absolute paths.
    config_path = str(Path(config_path).resolve())
    base_overrides = [*base_overrides, f"output_dir={Path(first.output_dir).resolve()}"]
    if not ray.is_initialized():  # the trials' actors run in this cluster, with its imports
        from actorlearner.pipeline.run import init_ray

        init_ray(first)

    def trainable(tune_cfg: dict[str, Any]) -> None:
        _trial(config_path, base_overrides, name, tune_cfg["overrides"])

    tuner = tune.Tuner(
        # The trial holds no CPU (its nested actors take the cores), only a token of memory,
        # since Tune needs a non-empty resource request.
        tune.with_resources(trainable, {"cpu": 0, "memory": 2**20}),
        param_space={"overrides": tune.grid_search(trials)},
        tune_config=tune.TuneConfig(max_concurrent_trials=1),
        run_config=tune.RunConfig(name=name, storage_path=str(Path("runs").resolve() / "tune")),
    )
    results = tuner.fit()
    out = []
    for i in range(len(results)):
        r = results[i]
        overrides = (r.config or {}).get("overrides", {})
        if r.error:
            raise RuntimeError(f"sweep trial {overrides} failed: {r.error}")
        metrics = {k: float(v) for k, v in (r.metrics or {}).items() if "/" in k}
        out.append(SweepResult(overrides, metrics))
    return out


def results_table(results: list[SweepResult]) -> str:
    from rich.console import Console
    from rich.table import Table

    keys = sorted({k for r in results for k in r.overrides})
    metric_keys = sorted({k for r in results for k in r.metrics})
    table = Table(title="sweep results")
    for k in keys + metric_keys:
        table.add_column(k)
    for r in results:
        table.add_row(
            *[r.overrides.get(k, "") for k in keys],
            *[f"{r.metrics.get(k, float('nan')):.3f}" for k in metric_keys],
        )
    console = Console(record=True, width=160)
    console.print(table)
    return console.export_text()
