"""The driver: one process that runs the stages of a config and writes runs/<name>/."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from actorlearner.config import ConfigError, RunConfig, to_yaml
from actorlearner.learner.checkpoint import stop_requested
from actorlearner.pipeline.plan import check_fits, make_plan
from actorlearner.pipeline.report import write_json_atomic
from actorlearner.pipeline.state import RunState

log = logging.getLogger("actorlearner")


def resolve_model_path(path: str) -> str:
    """ "base" means the shipped base model; anything else is a local path or a hub name."""
    if path == "base":
        from actorlearner.base_model import BASE_MODEL_DIR

        return str(BASE_MODEL_DIR)
    return path


def worker_env(imports: list[str] | None = None) -> dict[str, Any]:
    """The runtime env of a run's Ray workers: quiet libraries, one thread unless told,
    and the run's `imports` imported in every worker before it runs anything."""
    from actorlearner.cli import QUIET_ENV
    from actorlearner.userimports import runtime_env

    return runtime_env(list(imports or []), {**QUIET_ENV, "OMP_NUM_THREADS": "1"})


def init_ray(cfg: RunConfig) -> Any:
    """Join the cluster the run is told to join, else start a private one (see raycluster)."""
    import ray

    from actorlearner.raycluster import one_line_errors, start_or_join

    with one_line_errors():
        start_or_join(cfg.ray.address, cfg.ray.num_cpus, runtime_env=worker_env(cfg.imports))
    return ray


# Stages whose own caches decide what to redo: their settings may have changed since.
REENTERED = {"evaluate"}


def run_pipeline(cfg: RunConfig, stages: list[str] | None = None, resume: bool = True) -> dict:
    """Run `stages` (default: the config's) in order; finished stages are skipped on resume."""
    from actorlearner.pipeline import stages as stage_impl

    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    plan = make_plan(cfg)
    ray = init_ray(cfg)
    check_fits(plan, ray.cluster_resources())
    state = RunState(run_dir, resume=resume, planned=list(stages or cfg.stages))
    timings: dict[str, float] = (
        json.loads((run_dir / "timings.json").read_text())
        if (run_dir / "timings.json").exists()
        else {}
    )
    for stage in state.planned:
        if resume and state.done(stage) and stages is None and stage not in REENTERED:
            log.info("stage %s already done; skipping (use --no-resume to redo)", stage)
            continue
        fn = getattr(stage_impl, f"run_{stage}", None)
        if fn is None:
            raise ConfigError(f"unknown stage {stage!r}")
        start = time.perf_counter()
        outputs = fn(cfg, state)
        if stop_requested():  # the stage saved its checkpoint; it is not done
            raise SystemExit(f"stopped during {stage}: run the same command again to resume")
        timings[stage] = round(time.perf_counter() - start, 1)
        state.mark_done(stage, outputs)
        write_json_atomic(run_dir / "timings.json", timings)
    log.info("stage times: %s", stage_times(timings))
    summary_path = Path(run_dir / "summary.json")
    if not summary_path.exists():
        return {}
    summary = json.loads(summary_path.read_text())
    summary["timings_s"] = timings  # every stage's, the evaluate stage's (which wrote it) too
    write_json_atomic(summary_path, summary)
    return summary


def stage_times(timings: dict[str, float]) -> str:
    """`collect 13 s (2%), sft 153 s (25%), ...`: each stage's seconds and share of them all."""
    total = sum(timings.values()) or 1.0
    parts = [f"{k} {v:.0f} s ({100 * v / total:.0f}%)" for k, v in timings.items()]
    return ", ".join(parts) + f"; {total:.0f} s in all"
