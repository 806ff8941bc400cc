"""Refinement-depth evaluation on the cluster's workers, not in the driver.

Each model's problems (all its problem sets) are cut into one shard per worker slot
(the rollout actors' CPU/GPU size); every shard is a Ray task that loads the model once
and plays all its episodes together, every problem set's replies of a round in one
batch. All shards of all models go out at once and Ray spreads them over the nodes.
The tasks stream each finished round's counts back, so the driver logs progress as it
happens; it merges the episodes and computes the metrics, as an in-process run would.

`launch(..., idle=True)` evaluates beside other work (models that are final while PPO
trains): the tasks reserve no CPU and generate at idle CPU priority (engines/idle.py),
and `EvalRun.in_background` collects them in a driver thread.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actorlearner.engines.buckets import LengthBuckets
from actorlearner.engines.idle import IdlePriority
from actorlearner.evaluation.progress import RoundBoard, RoundCount, round_line
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
    name: str = ""  # the model's name in progress lines (default: the path's last part)

    def label(self) -> str:
        return self.name or Path(self.model.rstrip("/")).name or self.model


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


Played = tuple[list[EpisodeRecord], dict[str, list[bool]]]
ShardResult = tuple[dict[str, Played], float]  # per problem set, and the worker's seconds


def play_sets(
    model_path: str,
    engine_kind: str,
    sets: Sequence[tuple[str, Sequence[Problem]]],
    settings: DepthSettings,
    threads: int = 1,
    progress: Callable[[RoundCount], None] | None = None,
    idle: bool = False,
) -> ShardResult:
    """One worker: load the model once and play every episode of its problem sets,
    sets with distinct task ids together (one batch per round); with `idle`, loading the
    model and generating run at idle CPU priority."""
    start = time.perf_counter()

    def build() -> Any:
        import torch

        from actorlearner.engines import make_engine

        torch.set_num_threads(threads)
        # fixed weights: each round prefills only the new feedback, not the whole episode
        reuse = {"reuse_prefixes": True} if engine_kind == "hf" else {}
        engine = make_engine(engine_kind, model_path, **reuse)
        # CPU/GPU attention reads the padded cache: group by length
        return LengthBuckets(engine) if engine_kind == "hf" else engine

    engine = IdlePriority(build) if idle else build()
    try:
        out = _play(engine, model_path, sets, settings, progress)
    finally:
        if isinstance(engine, IdlePriority):
            engine.close()
    return out, time.perf_counter() - start


def _play(
    engine: Any,
    model_path: str,
    sets: Sequence[tuple[str, Sequence[Problem]]],
    settings: DepthSettings,
    progress: Callable[[RoundCount], None] | None,
) -> dict[str, Played]:
    tokenizer = getattr(engine, "tokenizer", None)
    if tokenizer is None:
        from actorlearner.models import load_tokenizer

        tokenizer = load_tokenizer(model_path)
    out: dict[str, Played] = {}
    for batch in disjoint(sets):
        problems = [p for _, ps in batch for p in ps]
        groups = {p.task_id: name for name, ps in batch for p in ps}
        records, passed = play_depth(
            engine, tokenizer, problems, settings.rounds, settings.samples_per_task,
            settings.temperature, settings.max_new_tokens,
            num_envs=min(MAX_BATCH, max(1, len(problems) * settings.samples_per_task)),
            seed=settings.seed, overlap="auto", env_id=settings.env_id,
            env_kwargs=settings.env_kwargs, progress=progress, groups=groups,
        )  # fmt: skip
        for name, ps in batch:
            ids = {p.task_id for p in ps}
            out[name] = (
                [r for r in records if r.task_id in ids],
                {t: v for t, v in passed.items() if t in ids},
            )
    return out


def disjoint(
    sets: Sequence[tuple[str, Sequence[Problem]]],
) -> list[list[tuple[str, Sequence[Problem]]]]:
    """Group problem sets so that no group holds one task id twice (a task id keys its
    episodes), keeping their order."""
    batches: list[tuple[set[str], list[tuple[str, Sequence[Problem]]]]] = []
    for name, problems in sets:
        ids = {p.task_id for p in problems}
        home = next((b for b in batches if not b[0] & ids), None)
        if home is None:
            batches.append((ids, [(name, problems)]))
        else:
            home[0].update(ids)
            home[1].append((name, problems))
    return [members for _, members in batches]


def play_shard(
    model_path: str,
    engine_kind: str,
    sets: Sequence[tuple[str, Sequence[Problem]]],
    settings: DepthSettings,
    threads: int = 1,
    idle: bool = False,
) -> Iterator[RoundCount | ShardResult]:
    """`play_sets` as a streaming Ray task: yields each finished round's counts as they
    come, then the result."""
    events: queue.Queue = queue.Queue()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["result"] = play_sets(
                model_path, engine_kind, sets, settings, threads, events.put, idle
            )
        except BaseException as exc:  # re-raised in the task below
            outcome["error"] = exc
        finally:
            events.put(None)

    thread = threading.Thread(target=work, name="eval-shard", daemon=True)
    thread.start()
    while (event := events.get()) is not None:
        yield event
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    yield outcome["result"]


def merge(problems: Sequence[Problem], parts: list[Played]) -> Played:
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
    """Metrics per (model, benchmark), computed by Ray tasks (one per model and worker
    slot); logs one line per model, problem set and finished round; `on_result` sees
    each job's metrics as soon as its model's shards are back (finished work is cached
    early)."""
    return launch(jobs, settings, engine_kind, shape).collect(judge, on_result)


def launch(
    jobs: Sequence[EvalJob],
    settings: DepthSettings,
    engine_kind: str = "hf",
    shape: WorkerShape | None = None,
    idle: bool = False,
) -> EvalRun:
    """Send out every shard of every job's model; `idle` tasks reserve no CPU and
    generate at idle priority (CPU workers only: a GPU worker needs its GPU)."""
    import ray

    shape = shape or WorkerShape()
    if idle and shape.num_gpus:
        raise ValueError("idle evaluation runs on CPU workers only; this shape needs GPUs")
    n = shape.slots(ray.cluster_resources())
    threads = max(1, int(shape.num_cpus))
    reserve = {"num_cpus": 0} if idle else {"num_cpus": shape.num_cpus}
    task = ray.remote(play_shard).options(
        **reserve, num_gpus=shape.num_gpus, scheduling_strategy="SPREAD"
    )
    run = EvalRun(settings, idle)
    for model, mine in _by_model(jobs).items():
        run.jobs[model] = mine
        label = mine[0].label()
        for i in range(n):  # interleaved: neighbouring problems are often alike in cost
            sets = [(j.benchmark, list(j.problems[i::n])) for j in mine if j.problems[i::n]]
            if sets:
                for name, _ in sets:
                    run.board.expect(label, name)
                ref = task.remote(model, engine_kind, sets, settings, threads, idle)  # type: ignore[call-arg]
                run.streams[ref] = model
                run.shards[model] += 1
        sizes = ", ".join(f"{j.benchmark} ({len(j.problems)} problems)" for j in mine)
        when = " at idle CPU priority" if idle else ""
        log.info("%s: evaluating on %s, %d rounds%s", label, sizes, settings.rounds, when)
    return run


def _by_model(jobs: Sequence[EvalJob]) -> dict[str, list[EvalJob]]:
    by_model: dict[str, list[EvalJob]] = defaultdict(list)
    for job in jobs:
        by_model[job.model].append(job)
    return by_model


class EvalRun:
    """The shards of launched evaluation jobs, in flight; `collect` gathers them."""

    def __init__(self, settings: DepthSettings, idle: bool = False):
        self.settings = settings
        self.idle = idle
        self.jobs: dict[str, list[EvalJob]] = {}
        self.streams: dict[Any, str] = {}
        self.shards: dict[str, int] = defaultdict(int)
        self.board = RoundBoard(lambda model, count: log.info(round_line(model, count)))

    def collect(
        self,
        judge: Any = None,
        on_result: Callable[[EvalJob, dict[str, Any]], None] | None = None,
    ) -> dict[tuple[str, str], dict[str, Any]]:
        """Wait for every shard, logging rounds as they finish; metrics per (model,
        benchmark), each handed to `on_result` as soon as its model is complete."""
        import ray

        parts: dict[str, list[ShardResult]] = defaultdict(list)
        results: dict[tuple[str, str], dict[str, Any]] = {}
        while self.streams:
            ready: list[Any] = ray.wait(list(self.streams), num_returns=1)[0]
            for stream in ready:
                model = self.streams[stream]
                try:
                    item: Any = ray.get(next(stream))
                except StopIteration:
                    del self.streams[stream]
                    continue
                if isinstance(item, RoundCount):
                    self.board.add(self.jobs[model][0].label(), item)
                    continue
                parts[model].append(item)
                if len(parts[model]) == self.shards[model]:
                    for job in self.jobs[model]:
                        metrics = score_job(job, parts[model], self.settings, judge)
                        metrics["idle_priority"] = self.idle
                        results[(job.model, job.benchmark)] = metrics
                        if on_result is not None:
                            on_result(job, metrics)
        return results

    def in_background(
        self,
        judge: Any = None,
        on_result: Callable[[EvalJob, dict[str, Any]], None] | None = None,
    ) -> BackgroundEval:
        """Collect in a driver thread, while the driver goes on with other work."""
        return BackgroundEval(self, judge, on_result)


class BackgroundEval:
    """An `EvalRun` collected by a daemon thread; `wait` joins it."""

    def __init__(self, run: EvalRun, judge: Any, on_result: Any):
        self.jobs = [job for mine in run.jobs.values() for job in mine]
        self.results: dict[tuple[str, str], dict[str, Any]] = {}
        self.error: BaseException | None = None

        def store(job: EvalJob, metrics: dict[str, Any]) -> None:
            self.results[(job.model, job.benchmark)] = metrics
            if on_result is not None:
                on_result(job, metrics)

        def work() -> None:
            try:
                run.collect(judge, store)
            except BaseException as exc:  # reported by `wait`; the stage redoes what is missing
                self.error = exc

        self._thread = threading.Thread(target=work, name="eval-in-background", daemon=True)
        self._thread.start()

    def wait(self) -> dict[tuple[str, str], dict[str, Any]]:
        """The metrics of every job that finished; a failure is logged, not raised, so the
        caller can evaluate what is missing itself."""
        self._thread.join()
        if self.error is not None:
            log.warning("background evaluation failed (%s); redoing what it left", self.error)
        return dict(self.results)


def score_job(
    job: EvalJob, parts: list[ShardResult], settings: DepthSettings, judge: Any
) -> dict[str, Any]:
    """One (model, benchmark)'s metrics from its model's shards."""
    mine = [played[job.benchmark] for played, _ in parts if job.benchmark in played]
    records, passed = merge(job.problems, mine)
    metrics = score_depth(records, passed, job.problems, settings.rounds, judge, settings.seed)
    metrics["eval_s"] = round(max(s for _, s in parts), 1) if parts else 0.0
    metrics["workers"] = len(mine)
    return metrics
