"""The four stages of a run. Each takes the run config and the run state and returns
the outputs the later stages read (paths of datasets and models)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from actorlearner.config import RunConfig
from actorlearner.pipeline.report import plot_depth, print_table, write_json_atomic
from actorlearner.pipeline.run import resolve_model_path
from actorlearner.pipeline.state import RunState

log = logging.getLogger("actorlearner")


def load_problem_set(cfg: RunConfig, spec: str, split_size: int | None = None) -> list:
    """Problems of one source, with the run's sizes for SyntheticBugs."""
    from envs.sources import load_problems

    if spec.startswith("synthetic"):
        n = split_size or (cfg.data.num_synthetic_test if spec.endswith("test") else cfg.data.num_synthetic_train)
        return load_problems(spec, n=n, seed=cfg.seed)
    problems = load_problems(spec)
    limit = cfg.data.max_problems_per_source
    return problems[:limit] if limit else problems


# ----------------------------------------------------------------------------- collect
def run_collect(cfg: RunConfig, state: RunState) -> dict[str, Any]:
    from actorlearner.collect.config import from_run_config
    from actorlearner.collect.runner import run_collect as collect

    out = cfg.run_dir / "data"
    ccfg = from_run_config(cfg, str(out))
    ccfg.policy = resolve_model_path(cfg.model.path)
    summary = collect(ccfg)
    return {"dir": str(out), "sft": str(out / "sft.jsonl"), "pool": str(out / "pool.jsonl"), "table": summary}


# ----------------------------------------------------------------------------- evaluate
def models_to_evaluate(cfg: RunConfig, state: RunState) -> dict[str, str]:
    """base, then the SFT and PPO models this run has produced (in training order)."""
    models = {"base": resolve_model_path(cfg.model.path)}
    for stage, name in (("sft", "sft"), ("train", "ppo")):
        path = state.output(stage).get("model")
        if path and Path(path).exists():
            models[name] = path
    return models


def run_evaluate(cfg: RunConfig, state: RunState) -> dict[str, Any]:
    """Refinement-depth evaluation of every model of the run on every benchmark."""
    import torch

    from actorlearner.engines import make_engine
    from actorlearner.pipeline.depth import evaluate_depth

    ev = cfg.evaluate
    cache_dir = cfg.run_dir / "eval"
    cache_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, cfg.ray.num_cpus or torch.get_num_threads()))
    results: dict[str, dict[str, Any]] = {}
    for name, path in models_to_evaluate(cfg, state).items():
        engine = None
        for bench in ev.benchmarks:
            cached = cache_dir / f"{name}__{bench.replace(':', '_').replace('/', '_')}.json"
            if cached.exists():  # an interrupted evaluation resumes here
                results.setdefault(name, {})[bench] = json.loads(cached.read_text())
                continue
            if engine is None:
                engine = make_engine(cfg.rollout.engine if cfg.rollout.engine == "vllm" else "hf", path)
            problems = load_problem_set(cfg, bench)
            if ev.max_problems:
                problems = problems[: ev.max_problems]
            start = time.perf_counter()
            metrics = evaluate_depth(
                engine,
                engine.tokenizer,  # type: ignore[attr-defined]
                problems,
                rounds=ev.rounds,
                samples_per_task=ev.samples_per_task,
                temperature=ev.temperature,
                max_new_tokens=ev.max_new_tokens,
                seed=cfg.seed,
            )
            metrics["eval_s"] = round(time.perf_counter() - start, 1)
            write_json_atomic(cached, metrics)
            results.setdefault(name, {})[bench] = metrics
            log.info("%s on %s: pass@1 by round %s", name, bench, metrics["pass@1"])
    write_summary(cfg, state, results)
    return {"summary": str(cfg.run_dir / "summary.json")}


def write_summary(cfg: RunConfig, state: RunState, results: dict[str, dict[str, Any]]) -> None:
    run_dir = cfg.run_dir
    timings = json.loads((run_dir / "timings.json").read_text()) if (run_dir / "timings.json").exists() else {}
    summary = {
        "name": cfg.name,
        "results": results,
        "collect": state.output("collect").get("table", {}),
        "sft": {k: v for k, v in state.output("sft").items() if k != "model"},
        "train": {k: v for k, v in state.output("train").items() if k != "model"},
        "timings_s": timings,
    }
    write_json_atomic(run_dir / "summary.json", summary)
    plot_depth(results, run_dir / "depth.png")
    text = print_table(results)
    (run_dir / "summary.txt").write_text(text)
