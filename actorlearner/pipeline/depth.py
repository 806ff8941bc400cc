"""Refinement-depth evaluation: pass@k after each explain-and-refine round 0..R.

Round 0 is the starting program (a SyntheticBugs problem's buggy code, or the model's
own first solution to a benchmark problem); round r is after r replies. Episodes are
played by the same `EpisodeRunner` the rollout actors use, so evaluation sees exactly
the token layout training used.
"""

from __future__ import annotations

import math
import queue
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

from actorlearner.engines.base import Engine, SamplingParams
from actorlearner.evaluation import pass_at_k
from actorlearner.evaluation.progress import RoundCount, RoundCounter
from actorlearner.pipeline.paired import num_solved
from envs.problem import Problem

OnStep = Callable[[str, int, bool, bool], None]


@dataclass
class EpisodeRecord:
    task_id: str
    sample: int
    solved_at: int | None  # refinement round at which all tests passed (0 = start program)
    replies: list[str] = field(default_factory=list)
    context: str = ""  # the episode's first prompt, as text


class _ScriptedStarts(gym.Wrapper):
    """Each reset takes the next (task_id, initial_code) from a queue shared by the env
    copies; `on_step(task_id, round, solved, ended)` sees every verdict (progress)."""

    def __init__(self, env: gym.Env, starts: queue.Queue, on_step: OnStep | None = None):
        super().__init__(env)
        self.starts = starts
        self.on_step = on_step
        self.task_id, self.turn = "", 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        task_id, code = self.starts.get_nowait()
        self.task_id, self.turn = task_id, 0
        return self.env.reset(seed=seed, options={"task_id": task_id, "initial_code": code})

    def step(self, action):
        result = self.env.step(action)
        self.turn += 1
        if self.on_step is not None:
            terminated, truncated = bool(result[2]), bool(result[3])
            self.on_step(self.task_id, self.turn, terminated, terminated or truncated)
        return result


def initial_programs(
    engine: Engine, tokenizer: Any, problems: Sequence[Problem], n: int, sampling: SamplingParams
) -> dict[str, list[str]]:
    """Starting programs per task: the problem's own buggy code, else n model samples."""
    out: dict[str, list[str]] = {}
    todo = []
    for p in problems:
        if p.metadata.get("initial_code"):
            out[p.task_id] = [p.metadata["initial_code"]] * n
        else:
            todo.append(p)
    if todo:
        from actorlearner.collect.prompts import extract_code, few_shot_messages
        from envs.sources import load_problems

        shots = load_problems("mbpp:prompt")[1:4]  # the paper's 3-shot MBPP prompts 2-4
        prompts = [
            tokenizer.apply_chat_template(few_shot_messages(p, shots), add_generation_prompt=True)
            for p in todo
        ]
        prompts = [list(x["input_ids"] if hasattr(x, "keys") else x) for x in prompts]
        gens = engine.generate([ids for ids in prompts for _ in range(n)], sampling)
        for i, p in enumerate(todo):
            texts = [
                tokenizer.decode(g.token_ids, skip_special_tokens=True)
                for g in gens[i * n : (i + 1) * n]
            ]
            out[p.task_id] = [extract_code(t, p) for t in texts]
    return out


def play(
    engine: Engine,
    tokenizer: Any,
    problems: Sequence[Problem],
    starts: dict[str, list[str]],
    rounds: int,
    sampling: SamplingParams,
    num_envs: int = 16,
    env_kwargs: dict | None = None,
    overlap: bool | str | None = None,
    env_id: str = "CodeRefine-v0",
    on_step: OnStep | None = None,
) -> list[EpisodeRecord]:
    """Play one episode per (task, start program) for up to `rounds` replies in `env_id`
    (the run's `env.id`). `overlap` (default: on with several envs) splits each round's
    batch to hide sandbox time."""
    from actorlearner.rollout.runner import EpisodeRunner

    records: list[EpisodeRecord] = []
    pending: queue.Queue = queue.Queue()
    by_task = {p.task_id: p for p in problems}
    for task_id, programs in starts.items():
        for code in programs:
            pending.put((task_id, code))
    total = pending.qsize()
    if rounds == 0 or total == 0:
        return records
    envs = [
        _ScriptedStarts(
            gym.make(
                env_id,
                problems=list(by_task.values()),
                max_turns=rounds,
                **(env_kwargs or {}),
            ),
            pending,
            on_step,
        )
        for _ in range(min(num_envs, total))
    ]
    split = len(envs) > 1 if overlap is None else overlap
    runner = EpisodeRunner(engine, tokenizer, envs, overlap=split, seed=0)
    try:
        trajectories = runner.run(total, sampling)
    finally:
        runner.close()
    counters: dict[str, int] = defaultdict(int)
    for traj in trajectories:
        solved = bool(traj.stats.get("solved"))
        runs = action_runs(traj.action_mask)
        ids = traj.token_ids
        records.append(
            EpisodeRecord(
                task_id=traj.task_id,
                sample=counters[traj.task_id],
                solved_at=len(traj.turn_ends) if solved else None,
                replies=[tokenizer.decode(ids[a:b], skip_special_tokens=True) for a, b in runs],
                context=tokenizer.decode(ids[: runs[0][0]], skip_special_tokens=True)
                if runs
                else "",
            )
        )
        counters[traj.task_id] += 1
    return records


def action_runs(mask: Sequence[int]) -> list[tuple[int, int]]:
    """[start, end) of each run of policy-generated tokens (one per reply)."""
    runs, start = [], None
    for i, m in enumerate(mask):
        if m and start is None:
            start = i
        elif not m and start is not None:
            runs.append((start, i))
            start = None
    if start is not None:
        runs.append((start, len(mask)))
    return runs


def depth_metrics(
    records: Sequence[EpisodeRecord], initial_passed: dict[str, list[bool]], rounds: int, ks=(1, 10)
) -> dict[str, Any]:
    """pass@k per round (unbiased estimator), the success-refinement rate per round, and
    each task's samples as the round that solved them (None: never)."""
    solved_at: dict[str, list[int | None]] = defaultdict(list)
    for task_id, flags in initial_passed.items():
        solved_at[task_id] += [0 for f in flags if f]
    for r in records:
        solved_at[r.task_id].append(r.solved_at)
    n_per_task = {t: len(v) for t, v in solved_at.items()}
    metrics: dict[str, Any] = {f"pass@{k}": [] for k in ks}
    metrics["refine_success"] = [0.0]
    for rnd in range(rounds + 1):
        for k in ks:
            vals = [
                pass_at_k(n, num_solved(solved_at[t], rnd), k)
                for t, n in n_per_task.items()
                if n >= k
            ]
            metrics[f"pass@{k}"].append(sum(vals) / len(vals) if vals else float("nan"))
        if rnd > 0:
            before = sum(s is None or s >= rnd for v in solved_at.values() for s in v)
            now = sum(s == rnd for v in solved_at.values() for s in v)
            metrics["refine_success"].append(now / before if before else 0.0)
    metrics = {k: v for k, v in metrics.items() if not all(x != x for x in v)}  # drop all-NaN k
    # per-task outcomes, so two models can be compared task by task (pipeline/paired.py)
    metrics["solved_at"] = {
        t: sorted(v, key=lambda s: math.inf if s is None else s) for t, v in solved_at.items()
    }
    metrics["num_tasks"] = len(n_per_task)
    metrics["samples_per_task"] = max(n_per_task.values(), default=0)
    return metrics


def initial_verdicts(
    problems: Sequence[Problem], starts: dict[str, list[str]]
) -> dict[str, list[bool]]:
    """Run every starting program once in the sandbox: which already pass (round 0)."""
    import sandbox

    by_task = {p.task_id: p for p in problems}
    jobs, keys = [], []
    for task_id, programs in starts.items():
        for code in programs:
            jobs.append((by_task[task_id].program(code), by_task[task_id].tests))
            keys.append(task_id)
    verdicts = sandbox.run_batch(jobs)
    out: dict[str, list[bool]] = defaultdict(list)
    for task_id, verdict in zip(keys, verdicts, strict=True):
        out[task_id].append(verdict.passed)
    return out


def play_depth(
    engine: Engine,
    tokenizer: Any,
    problems: Sequence[Problem],
    rounds: int,
    samples_per_task: int = 1,
    temperature: float = 0.0,
    max_new_tokens: int = 256,
    num_envs: int = 16,
    seed: int = 0,
    overlap: bool | str | None = None,
    env_id: str = "CodeRefine-v0",
    env_kwargs: dict | None = None,
    progress: Callable[[RoundCount], None] | None = None,
    groups: Mapping[str, str] | None = None,
) -> tuple[list[EpisodeRecord], dict[str, list[bool]]]:
    """The episodes of one problem set and which starting programs already pass;
    `progress` gets each finished round's counts per group (task_id -> group, default one)."""
    sampling = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    starts = initial_programs(engine, tokenizer, problems, samples_per_task, sampling)
    passed = initial_verdicts(problems, starts)
    failing = {
        t: [c for c, ok in zip(codes, passed[t], strict=True) if not ok]
        for t, codes in starts.items()
    }
    counter = None
    if progress is not None:
        groups = groups or {p.task_id: "" for p in problems}
        counter = RoundCounter(groups, passed, rounds, progress)
    records = play(
        engine, tokenizer, problems, failing, rounds, sampling, num_envs=num_envs,
        env_kwargs=env_kwargs, overlap=overlap, env_id=env_id,
        on_step=counter.step if counter else None,
    )  # fmt: skip
    if counter is not None:
        counter.finish()
    return records, passed


def evaluate_depth(
    engine: Engine,
    tokenizer: Any,
    problems: Sequence[Problem],
    rounds: int,
    samples_per_task: int = 1,
    temperature: float = 0.0,
    max_new_tokens: int = 256,
    num_envs: int = 16,
    seed: int = 0,
    judge: Any = None,
) -> dict[str, Any]:
    """Metrics for one benchmark: pass@1/pass@10 per round 0..R and refinement success;
    with `judge` (a TeacherConfig), also the judge's explanation scores (first replies)."""
    records, passed = play_depth(
        engine, tokenizer, problems, rounds, samples_per_task, temperature, max_new_tokens,
        num_envs, seed,
    )  # fmt: skip
    return score_depth(records, passed, problems, rounds, judge, seed)


def score_depth(
    records: Sequence[EpisodeRecord],
    passed: dict[str, list[bool]],
    problems: Sequence[Problem],
    rounds: int,
    judge: Any = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Depth metrics of played episodes, plus the judge's scores of first replies when a
    judge is given (in-process and cluster evaluation score the same way)."""
    metrics = depth_metrics(records, passed, rounds)
    if judge is not None:
        metrics["judge"] = judge_first_replies(records, problems, judge, seed)
    return metrics


def judge_first_replies(
    records: Sequence[EpisodeRecord], problems: Sequence[Problem], judge: Any, seed: int
) -> dict:
    from actorlearner.pipeline.judge import JudgeItem, judge_explanations
    from envs.templates import parse_reply

    entry = {p.task_id: p.entry_point for p in problems}
    items = []
    for r in records:
        if r.replies:
            parsed = parse_reply(r.replies[0], entry[r.task_id])
            items.append(JudgeItem(r.context, parsed.explanation, parsed.code or ""))
    return judge_explanations(items, judge, seed=seed)


def evaluate_model(
    model_path: str,
    specs: Sequence[str],
    rounds: int,
    samples_per_task: int = 1,
    temperature: float = 0.0,
    max_new_tokens: int = 256,
    engine_kind: str = "hf",
    max_problems: int = 0,
    judge: Any = None,
    seed: int = 0,
    address: str = "",
    name: str = "",
) -> dict[str, dict[str, Any]]:
    """The refinement-depth benchmark of one model on several problem sets, played on
    the Ray cluster `address` names (default: a private local one, stopped after);
    `name` names the model in the progress lines."""
    from actorlearner.pipeline.cluster_eval import DepthSettings, EvalJob, evaluate_jobs
    from actorlearner.pipeline.run import worker_env
    from actorlearner.raycluster import RayRun, one_line_errors
    from envs.sources import load_problems

    settings = DepthSettings(rounds, samples_per_task, temperature, max_new_tokens, seed)
    jobs = []
    for spec in specs:
        problems = load_problems(spec)
        jobs.append(
            EvalJob(spec, model_path, problems[:max_problems] if max_problems else problems, name)
        )
    with one_line_errors(), RayRun(address, runtime_env=worker_env()):
        results = evaluate_jobs(jobs, settings, engine_kind, judge=judge)
    return {spec: results[(model_path, spec)] for spec in specs}
