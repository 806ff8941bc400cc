"""The four stages of a run. Each takes the run config and the run state and returns
the outputs the later stages read (paths of datasets and models)."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

from actorlearner.config import RunConfig
from actorlearner.learner.checkpoint import stop_requested
from actorlearner.pipeline.paired import compare_stages, paired_lines
from actorlearner.pipeline.plan import make_plan, placement_for
from actorlearner.pipeline.report import plot_depth, print_table, write_json_atomic
from actorlearner.pipeline.run import resolve_model_path
from actorlearner.pipeline.state import RunState

log = logging.getLogger("actorlearner")


def load_problem_set(cfg: RunConfig, spec: str, split_size: int | None = None) -> list:
    """Problems of one source, with the run's sizes for SyntheticBugs."""
    from envs.sources import load_problems

    if spec.startswith("synthetic"):
        sizes = {
            "test": cfg.data.num_synthetic_test,
            "novel": cfg.data.num_synthetic_novel,
        }
        n = split_size or sizes.get(spec.rpartition(":")[2], cfg.data.num_synthetic_train)
        return load_problems(spec, n=n, seed=cfg.seed)
    problems = load_problems(spec)
    limit = cfg.data.max_problems_per_source
    return problems[:limit] if limit else problems


# ----------------------------------------------------------------------------- collect
def run_collect(cfg: RunConfig, state: RunState) -> dict[str, Any]:
    from actorlearner.collect.config import from_run_config
    from actorlearner.collect.runner import run_collect as collect

    out = cfg.run_dir / "data"
    ccfg = from_run_config(cfg, str(out), resolve_model_path(cfg.model.path))
    summary = collect(ccfg)
    return {
        "dir": str(out),
        "sft": str(out / "sft.jsonl"),
        "pool": str(out / "pool.jsonl"),
        "table": summary,
    }


# ----------------------------------------------------------------------------- evaluate
def models_to_evaluate(cfg: RunConfig, state: RunState) -> dict[str, str]:
    """base, then the SFT and PPO models this run has produced (in training order)."""
    models = {"base": resolve_model_path(cfg.model.path)}
    for stage, name in (("sft", "sft"), ("train", "ppo")):
        path = state.output(stage).get("model")
        if path and Path(path).exists():
            models[name] = path
    return models


def judge_config(cfg: RunConfig) -> Any:
    """The explanation judge's endpoint, when the config names one."""
    return cfg.evaluate.judge


def eval_settings(cfg: RunConfig, model: str, bench: str, num_problems: int) -> dict[str, Any]:
    """Everything a cached evaluation number depends on: a cache computed otherwise is stale."""
    ev, judge = cfg.evaluate, cfg.evaluate.judge
    return {
        "model": model,
        "benchmark": bench,
        "num_problems": num_problems,
        "max_problems": ev.max_problems,
        "rounds": ev.rounds,
        "samples_per_task": ev.samples_per_task,
        "temperature": ev.temperature,
        "max_new_tokens": ev.max_new_tokens,
        "seed": cfg.seed,
        "engine": eval_engine(cfg),
        "env": [cfg.env.id, eval_env_kwargs(cfg)],
        "judge": f"{judge.model}@{judge.base_url}" if judge else None,
    }


def eval_env_kwargs(cfg: RunConfig) -> dict[str, Any]:
    """`env.kwargs` for evaluation: problems and turns are the benchmark's and the rounds."""
    set_by_eval = ("problems", "max_turns", "pool", "rewards")
    return {k: v for k, v in cfg.env.kwargs.items() if k not in set_by_eval}


def depth_settings(cfg: RunConfig) -> Any:
    """The config's evaluation settings as the cluster evaluation takes them."""
    from actorlearner.pipeline.cluster_eval import DepthSettings

    ev = cfg.evaluate
    return DepthSettings(
        ev.rounds, ev.samples_per_task, ev.temperature, ev.max_new_tokens, cfg.seed,
        cfg.env.id, eval_env_kwargs(cfg),
    )  # fmt: skip


def eval_engine(cfg: RunConfig) -> str:
    return cfg.rollout.engine if cfg.rollout.engine == "vllm" else "hf"


def cached_result(path: Path, settings: dict[str, Any], resume: bool) -> dict[str, Any] | None:
    """A cached result computed with exactly `settings` (never when not resuming)."""
    if not resume or not path.exists():
        return None
    cached = json.loads(path.read_text())
    if cached.get("settings") != settings:
        log.info("%s was computed with other settings; recomputing", path.name)
        return None
    return cached


class EvalTodo:
    """The (model, benchmark) evaluations of `models` that no cache holds yet (`jobs`),
    and `results` per model name and benchmark, which `store` fills and caches."""

    def __init__(self, cfg: RunConfig, state: RunState, models: dict[str, str]):
        from actorlearner.pipeline.cluster_eval import EvalJob

        cache_dir = cfg.run_dir / "eval"
        cache_dir.mkdir(parents=True, exist_ok=True)
        self.results: dict[str, dict[str, Any]] = {}
        self.jobs: list[EvalJob] = []
        self._where: dict[tuple[str, str], tuple[str, Path, dict[str, Any]]] = {}
        for bench in cfg.evaluate.benchmarks:
            problems = _eval_problems(cfg, bench)
            for name, path in models.items():
                settings = eval_settings(cfg, path, bench, len(problems))
                cached = cache_dir / f"{name}__{bench.replace(':', '_').replace('/', '_')}.json"
                hit = cached_result(cached, settings, state.resume)
                self.results.setdefault(name, {})[bench] = hit
                if hit is None:
                    self.jobs.append(EvalJob(bench, path, problems, name))
                    self._where[(path, bench)] = (name, cached, settings)

    def store(self, job: Any, metrics: dict[str, Any]) -> None:
        name, cached, settings = self._where[(job.model, job.benchmark)]
        metrics["settings"] = settings
        write_json_atomic(cached, metrics)
        self.keep(job, metrics)
        log.info("%s on %s: pass@1 by round %s", name, job.benchmark, metrics["pass@1"])

    def keep(self, job: Any, metrics: dict[str, Any]) -> None:
        """Record metrics another `EvalTodo` has stored already."""
        self.results[self._where[(job.model, job.benchmark)][0]][job.benchmark] = metrics

    def wanted(self, job: Any) -> bool:
        return (job.model, job.benchmark) in self._where


def eval_shape(cfg: RunConfig) -> Any:
    """An evaluation worker is the size of a rollout actor."""
    from actorlearner.pipeline.cluster_eval import WorkerShape

    return WorkerShape(cfg.rollout.num_cpus_per_actor, cfg.rollout.num_gpus_per_actor)


def evaluate_during_training(cfg: RunConfig, state: RunState) -> None:
    """Start evaluating the models that are final before PPO (base, SFT) while it trains,
    at idle CPU priority; the evaluate stage of this invocation collects the results."""
    shape = eval_shape(cfg)
    if not cfg.evaluate.during_training or "evaluate" not in state.planned or shape.num_gpus:
        return
    from actorlearner.pipeline.cluster_eval import launch

    final = {k: v for k, v in models_to_evaluate(cfg, state).items() if k != "ppo"}
    todo = EvalTodo(cfg, state, final)
    if todo.jobs:
        run = launch(todo.jobs, depth_settings(cfg), eval_engine(cfg), shape, idle=True)
        state.pending["evaluate"] = run.in_background(judge_config(cfg), todo.store)


def run_evaluate(cfg: RunConfig, state: RunState) -> dict[str, Any]:
    """Refinement-depth evaluation of every model of the run on every benchmark, on the
    cluster's workers; finished (model, benchmark) results are cached with their settings.
    Evaluations started during PPO are collected, not redone."""
    from actorlearner.pipeline.cluster_eval import launch

    todo = EvalTodo(cfg, state, models_to_evaluate(cfg, state))
    background = state.pending.pop("evaluate", None)
    started = {(j.model, j.benchmark) for j in background.jobs} if background else set()
    depth, engine, judge = depth_settings(cfg), eval_engine(cfg), judge_config(cfg)
    shape = eval_shape(cfg)
    fresh = [j for j in todo.jobs if (j.model, j.benchmark) not in started]
    runs = [launch(fresh, depth, engine, shape)] if fresh else []
    if background is not None:
        done, left = background.wait(), []
        for job in filter(todo.wanted, background.jobs):  # not read from the cache above
            key = (job.model, job.benchmark)
            if key in done:
                todo.keep(job, done[key])
            else:
                left.append(job)
        if left:
            runs.append(launch(left, depth, engine, shape))
    for run in runs:
        run.collect(judge, todo.store)
    write_summary(cfg, state, todo.results)
    return {"summary": str(cfg.run_dir / "summary.json")}


def _eval_problems(cfg: RunConfig, bench: str) -> list:
    problems = load_problem_set(cfg, bench)
    return problems[: cfg.evaluate.max_problems] if cfg.evaluate.max_problems else problems


def write_summary(cfg: RunConfig, state: RunState, results: dict[str, dict[str, Any]]) -> None:
    run_dir = cfg.run_dir
    summary = {
        "name": cfg.name,
        "results": results,
        "collect": state.output("collect").get("table", {}),
        "sft": {k: v for k, v in state.output("sft").items() if k != "model"},
        "train": {k: v for k, v in state.output("train").items() if k != "model"},
        "paired": compare_stages(results),
    }
    write_json_atomic(run_dir / "summary.json", summary)
    plot_depth(results, run_dir / "depth.png")
    table = print_table(results)
    notes = settings_lines(results) + _training_lines(summary["sft"], summary["train"])
    notes += "".join(f"{line}\n" for line in paired_lines(summary["paired"]))
    print(notes, end="")  # below the table just printed
    (run_dir / "summary.txt").write_text(table + notes)


def settings_lines(results: dict[str, dict[str, Any]]) -> str:
    """How each number was computed: one line per benchmark, or per model where they differ."""
    lines = []
    for bench in dict.fromkeys(b for per in results.values() for b in per):
        seen = {
            model: _describe(per[bench].get("settings"))
            for model, per in results.items()
            if bench in per
        }
        if len(set(seen.values())) == 1:
            lines.append(f"{bench}: {next(iter(seen.values()))}")
        else:
            lines += [f"{bench}, {model}: {text}" for model, text in seen.items()]
    return "".join(f"{line}\n" for line in lines)


def _describe(s: dict[str, Any] | None) -> str:
    if not s:
        return "settings not recorded (computed before settings were cached)"
    mode = "greedy" if s["temperature"] == 0 else f"temperature {s['temperature']}"
    text = (
        f"{s['num_problems']} problems, {s['rounds']} rounds, {s['samples_per_task']} "
        f"sample(s) per task, {mode}, max_new_tokens {s['max_new_tokens']}, seed {s['seed']}"
    )
    return text + (f", judge {s['judge']}" if s.get("judge") else "")


def _training_lines(sft: dict[str, Any], train: dict[str, Any]) -> str:
    lines = []
    first, last = sft.get("first_eval", {}), sft.get("last_metrics", {})
    if "eval/loss" in first and "eval/loss" in last:
        lines.append(f"SFT held-out loss: {first['eval/loss']:.3f} -> {last['eval/loss']:.3f}")
    if "reward_slope" in train:
        lines.append(
            f"PPO training reward over {train['iterations']} iterations: "
            f"{train['reward_first_half']:.2f} (first half mean) -> "
            f"{train['reward_last_half']:.2f} (last half mean), "
            f"slope {train['reward_slope']:+.3f} per iteration"
        )
    if "solved_slope" in train:
        lines.append(
            f"  solved {100 * train['solved_first_half']:.0f}% -> "
            f"{100 * train['solved_last_half']:.0f}% (half means), "
            f"slope {100 * train['solved_slope']:+.1f} points per iteration"
        )
    if "probe_solved_history" in train:
        solved = " ".join(f"{100 * s:.0f}%" for s in train["probe_solved_history"])
        reward = " ".join(f"{r:.2f}" for r in train["probe_reward_history"])
        lines.append(
            f"PPO probe (fixed training starts, greedy) per policy version: solved {solved}"
        )
        lines.append(f"  reward {reward}, slope {train['probe_reward_slope']:+.3f} per version")
    if "probe_paired" in train:
        pr = train["probe_paired"]
        lines.append(
            f"  first -> last version, paired over {pr['tasks']} probe tasks: reward "
            f"{pr['mean_change']:+.2f} ({pr['up']} up, {pr['down']} down, Wilcoxon p={pr['p_value']:.2g})"
        )
    return "".join(f"{line}\n" for line in lines)


# ----------------------------------------------------------------------------- sft
def _start_model(cfg: RunConfig, state: RunState, after: str | None) -> str:
    """The model a stage starts from: the previous stage's export, else the config's."""
    if after and state.output(after).get("model"):
        return state.output(after)["model"]
    return resolve_model_path(cfg.model.path)


def run_sft(cfg: RunConfig, state: RunState) -> dict[str, Any]:
    from actorlearner.learner.group import LearnerGroup
    from actorlearner.learner.sft_loop import load_sft_data, train_sft
    from actorlearner.metrics import MetricsLogger
    from actorlearner.pipeline.components import learner_config

    collected = state.output("collect").get("sft") or str(cfg.run_dir / "data" / "sft.jsonl")
    data_path = cfg.sft.data or collected  # sft.data: bring your own SFT JSONL
    if not Path(data_path).is_file() or not Path(data_path).stat().st_size:
        from actorlearner.config import ConfigError

        raise ConfigError(
            f"no SFT data in {data_path}: run the collect stage first (actorlearner collect or "
            "pipeline with the same config), or set sft.data to your own SFT JSONL"
        )
    ckpt = cfg.run_dir / "checkpoints" / "sft"
    lcfg = learner_config(cfg, resolve_model_path(cfg.model.path), ckpt, "sft")
    lcfg.sft = dataclasses.replace(lcfg.sft, data=data_path)
    # No rollout actors run during SFT: the learner ranks share all the CPUs of the plan.
    cpus = cfg.sft.cpu_threads or make_plan(cfg).cpus / cfg.learner.num_ranks
    placement = placement_for(cfg, with_rollout=False, cpus_per_rank=cpus)  # a GPU per rank
    learner = LearnerGroup(
        lcfg, cfg.learner.num_ranks, cpus, cfg.learner.num_gpus_per_rank, placement
    )
    logger = MetricsLogger(cfg.run_dir / "tb")
    try:
        from actorlearner.models import load_tokenizer

        data = load_sft_data(lcfg, load_tokenizer(lcfg.model))
        start = time.perf_counter()
        first: dict[str, dict] = {}

        def report(metrics: dict[str, float], step: int) -> None:
            logger.log(
                {
                    f"sft/{k}" if "/" not in k else k.replace("loss/", "sft/loss/"): v
                    for k, v in metrics.items()
                },
                step,
            )
            if "eval/loss" in metrics or "loss/sft_eval" in metrics:
                first.setdefault("held_out", metrics)

        resume = ckpt.exists() and any(ckpt.iterdir())
        last = train_sft(learner, lcfg, data, resume=resume, on_metrics=report)
        out = cfg.run_dir / "models" / "sft"
        learner.export_hf(out)
    finally:
        learner.shutdown()
        logger.close()
        if placement is not None:
            placement.remove()
    return {
        "model": str(out),
        "examples": len(data.train),
        "held_out_examples": len(data.held_out),
        "last_metrics": last,
        "first_eval": first.get("held_out", {}),
        "seconds": round(time.perf_counter() - start, 1),
    }


# ----------------------------------------------------------------------------- train (PPO)
def train_problems(cfg: RunConfig) -> list:
    return [p for spec in cfg.data.train for p in load_problem_set(cfg, spec)]


def run_train(cfg: RunConfig, state: RunState) -> dict[str, Any]:
    from actorlearner.learner.group import LearnerGroup
    from actorlearner.metrics import MetricsLogger
    from actorlearner.pipeline.components import learner_config, rollout_config
    from actorlearner.pipeline.train_loop import ppo_loop
    from actorlearner.rollout.group import RolloutGroup

    model = _start_model(cfg, state, "sft")
    pool = state.output("collect").get("pool")
    pool = pool if pool and Path(pool).exists() and Path(pool).stat().st_size else None
    ckpt = cfg.run_dir / "checkpoints" / "ppo"
    lcfg = learner_config(cfg, model, ckpt, "ppo")
    placement = placement_for(cfg)  # one bundle per GPU: a rank and the actor sharing it
    learner = LearnerGroup(
        lcfg,
        cfg.learner.num_ranks,
        cfg.learner.num_cpus_per_rank,
        cfg.learner.num_gpus_per_rank,
        placement,
    )
    rollouts = RolloutGroup(rollout_config(cfg, model, train_problems(cfg), pool), placement)
    logger = MetricsLogger(cfg.run_dir / "tb")
    try:
        actors = actor_nodes(rollouts.wait_ready())
        evaluate_during_training(cfg, state)  # after the actors and ranks have started
        t = cfg.train
        stats = ppo_loop(
            rollouts,
            learner,
            t.iterations,
            t.episodes_per_iteration,
            t.mode,
            ckpt,
            logger,
            t.checkpoint_every,
            t.probe_episodes,
        )
        actors = _latest_nodes(rollouts, actors)
        out = cfg.run_dir / "models" / "ppo"
        if not stop_requested():  # a stopped run resumes from its checkpoint instead
            learner.export_hf(out, merge_lora=True)
    finally:
        rollouts.shutdown()
        learner.shutdown()
        logger.close()
        if placement is not None:
            placement.remove()
    faults = dict(rollouts.stats)
    return {"model": str(out), "mode": cfg.train.mode, "actors": actors, "faults": faults,
            **stats.summary()}  # fmt: skip


def actor_nodes(info: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Where each rollout actor (and so its envs and sandbox) ran."""
    return [{k: i.get(k) for k in ("index", "node_id", "node_ip", "pid")} for i in info]


def _latest_nodes(rollouts: Any, before: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The actors' nodes at the end (a replaced actor may have moved); `before` if
    some actor cannot answer (its node is gone)."""
    try:
        return actor_nodes(rollouts.info(timeout_s=10.0))
    except Exception:
        return before
