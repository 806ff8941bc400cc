"""Refinement-depth evaluation on the cluster's workers, not in the driver.

Each (model, problem set) is cut into one shard per worker slot (the rollout actors'
CPU/GPU size); every shard is a Ray task that loads the model once and plays all its
episodes together, each round's replies in one batch. All shards of all models go out
at once and Ray spreads them over the nodes; the driver only merges the episodes and
computes the metrics, exactly as an in-process run would.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from actorlearner.pipeline.depth import (
    EpisodeRecord,
    play_depth,
    score_depth,
)
from envs.problem import Problem

log = logging.getLogger("actorlearner")

# Episodes one worker plays at once: a whole shard of the tiny run fits in one batch;
# beyond this the memory of a long-context batch grows faster than the speed-up.
MAX_BATCH = 128


@dataclass(frozen=True)
class DepthSettings:
    """What a depth number depends on besides the model and the problems."""

    rounds: int
    samples_per_task: int = 1
    temperature: float = 0.0
    max_new_tokens: int = 256
    seed: int = 0
    env_id: str = "CodeRefine-v0"  # the run's env.id
    env_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)  # the run's env.kwargs

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class EvalJob:
    benchmark: str
    model: str
    problems: Sequence[Problem]


@dataclass(frozen=True)
class WorkerShape:
    """The resources of one evaluation worker, like one rollout actor's."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def slots(self, resources: dict[str, float]) -> int:
        """How many such workers the cluster holds at once."""
        counts = [resources.get("CPU", 0.0) / self.num_cpus] if self.num_cpus else []
        if self.num_gpus:
            counts.append(resources.get("GPU", 0.0) / self.num_gpus)
        return max(1, math.floor(min(counts, default=1.0) + 1e-9))


def play_shard(
    model_path: str,
    engine_kind: str,
    problems: Sequence[Problem],
    settings: DepthSettings,
    threads: int = 1,
) -> tuple[list[EpisodeRecord], dict[str, list[bool]], float]:
    """One worker: every episode of its problems at once (one batch per round)."""
    import torch

    from actorlearner.engines import make_engine
    from actorlearner.models import load_tokenizer

    start = time.perf_counter()
    torch.set_num_threads(threads)
    engine = make_engine(engine_kind, model_path)
    episodes = min(MAX_BATCH, max(1, len(problems) * settings.samples_per_task))
    records, passed = play_depth(
        engine,
        getattr(engine, "tokenizer", None) or load_tokenizer(model_path),
        problems,
        settings.rounds,
        settings.samples_per_task,
        settings.temperature,
        settings.max_new_tokens,
        num_envs=episodes,
        seed=settings.seed,
        overlap="auto",
        env_id=settings.env_id,
        env_kwargs=settings.env_kwargs,
    )
    return records, passed, time.perf_counter() - start


def shards(problems: Sequence[Problem], n: int) -> list[list[Problem]]:
    """n interleaved shards (neighbouring problems are often alike in cost)."""
    return [list(problems[i::n]) for i in range(min(n, len(problems)))]


def merge(
    problems: Sequence[Problem], parts: list[tuple[list[EpisodeRecord], dict[str, list[bool]]]]
) -> tuple[list[EpisodeRecord], dict[str, list[bool]]]:
    """The shards' episodes and start verdicts, in problem order (metrics sum in that order)."""
    records = [r for part, _ in parts for r in part]
    verdicts = {t: v for _, part in parts for t, v in part.items()}
    return records, {p.task_id: verdicts[p.task_id] for p in problems if p.task_id in verdicts}


def evaluate_jobs(
    jobs: Sequence[EvalJob],
    settings: DepthSettings,
    engine_kind: str = "hf",
    shape: WorkerShape | None = None,
    judge: Any = None,
    on_result: Callable[[EvalJob, dict[str, Any]], None] | None = None,
) -> dict[tuple[str, str], dict[str, Any]]:
    """Metrics per (model, benchmark), computed by Ray tasks; `on_result` sees each job's
    metrics as soon as its shards are back (so finished work is cached early)."""
    import ray

    shape = shape or WorkerShape()
    n = shape.slots(ray.cluster_resources())
    threads = max(1, int(shape.num_cpus))
    task = ray.remote(play_shard).options(
        num_cpus=shape.num_cpus, num_gpus=shape.num_gpus, scheduling_strategy="SPREAD"
    )
    refs = {
        job.benchmark + "\0" + job.model: [
            task.remote(job.model, engine_kind, shard, settings, threads)  # type: ignore[call-arg]
            for shard in shards(job.problems, n)
        ]
        for job in jobs
    }
    results: dict[tuple[str, str], dict[str, Any]] = {}
    for job in jobs:
        start = time.perf_counter()
        parts = ray.get(refs[job.benchmark + "\0" + job.model])
        records, passed = merge(job.problems, [(r, p) for r, p, _ in parts])
        metrics = score_depth(records, passed, job.problems, settings.rounds, judge, settings.seed)
        metrics["eval_s"] = round(max(s for _, _, s in parts), 1) if parts else 0.0
        metrics["workers"] = len(parts)
        results[(job.model, job.benchmark)] = metrics
        log.debug(
            "%s on %s gathered in %.1f s", job.model, job.benchmark, time.perf_counter() - start
        )
        if on_result is not None:
            on_result(job, metrics)
    return results
