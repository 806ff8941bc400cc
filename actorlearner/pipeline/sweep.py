"""`actorlearner sweep`: a grid over config overrides; each trial is a whole run.

Any key a config has can be swept, list items included: `train.rewards.1.weight=0.5,2`
(a preset is expanded before overrides apply), `train.max_turns=1,2`, `evaluate.rounds=1,3`.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actorlearner.config import ConfigError, load_config

log = logging.getLogger("actorlearner")


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


def trial_name(sweep_name: str, params: dict[str, str]) -> str:
    return f"{sweep_name}/" + "-".join(f"{_short(k)}={v}" for k, v in params.items())


def run_trial(config_path: str, overrides: list[str]) -> dict[str, float]:
    """One whole run (finished stages are skipped when a sweep is rerun); its headline numbers."""
    from actorlearner.pipeline.run import run_pipeline
    from actorlearner.pipeline.state import RunState

    cfg = load_config(config_path, overrides)
    summary = run_pipeline(cfg)
    if "train" not in summary:  # no evaluation ran: the PPO stage's own numbers
        summary = {**summary, "train": RunState(cfg.run_dir).output("train")}
    return headline_metrics(summary)


def run_sweep(
    config_path: str, params: list[str], base_overrides: list[str], name: str
) -> list[SweepResult]:
    """Run every grid point as a whole run, one after another in this driver and cluster.

    Each run already fills the cluster (its actors and learner ranks), so trials run one
    at a time; in-process they also keep their actors out of any scheduler's placement
    group. Every grid point is loaded (and so validated) before the first one runs."""
    grid = parse_grid(params)
    trials = trial_overrides(grid)
    loaded = [
        load_config(config_path, base_overrides + [f"{k}={v}" for k, v in t.items()])
        for t in trials
    ]
    # pin the outputs, so a trial's relative paths cannot depend on where it runs
    base_overrides = [*base_overrides, f"output_dir={Path(loaded[0].output_dir).resolve()}"]
    results = []
    for trial in trials:
        overrides = [*base_overrides, *(f"{k}={v}" for k, v in trial.items())]
        overrides.append(f"name={trial_name(name, trial)}")
        log.info("sweep trial %s", trial)
        results.append(SweepResult(trial, run_trial(config_path, overrides)))
    return results


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
