"""The driver: plan units, farm them out to Ray workers, store each as it finishes,
then assemble the datasets, the summary table and the provenance."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actorlearner.collect import datasets, provenance
from actorlearner.collect.config import CollectConfig
from actorlearner.collect.store import UnitStore, atomic_write_json, atomic_write_jsonl
from actorlearner.collect.summary import count_unit, running_counts, summarize, table

log = logging.getLogger(__name__)
UNITS_FILE = "units.jsonl"
CONFIG_FILE = "collect_config.json"


@dataclass(frozen=True)
class UnitRef:
    spec: str
    task_id: str
    uid: str


class Collector:
    """Does units of work; one per Ray actor (or one in-process). Models load lazily, once."""

    def __init__(self, cfg: CollectConfig, teacher_key: str | None = None):
        """`teacher_key`: the driver's API key, so workers need not inherit its environment."""
        from sandbox.types import Limits

        self.cfg = cfg
        self._teacher_key = teacher_key
        self._lock = threading.Lock()  # units may run in threads (cfg.units_per_worker > 1)
        self.limits = Limits(timeout_s=cfg.timeout_s, cpu_s=max(1, int(cfg.timeout_s)))
        self._problems: dict[str, dict] = {}
        self._models = None
        self._shots = None

    def _problem(self, spec: str, task_id: str):
        if spec not in self._problems:
            self._problems[spec] = {p.task_id: p for p in load_source(self.cfg, spec)}
        return self._problems[spec][task_id]

    def models(self):
        from actorlearner.collect.generators import PolicyModel, TeacherModel
        from actorlearner.collect.unit import Models

        if self._models is None:
            cfg, policy = self.cfg, None

            def make(kind: str):
                nonlocal policy
                if kind == "teacher":
                    return TeacherModel(cfg.teacher, self._teacher_key)
                policy = policy or PolicyModel(cfg.policy, cfg.engine, cfg.dtype)
                return policy

            sampler = make(cfg.sampler) if cfg.samples_per_problem else None
            refiner = make(cfg.refiner) if cfg.refiner != "reference" else None
            self._models = Models(sampler, refiner)
        return self._models

    def shots(self):
        if self._shots is None:
            from actorlearner.collect.prompts import select_shots
            from envs.sources import load_problems

            ids = list(self.cfg.few_shot_ids)
            self._shots = select_shots(load_problems(self.cfg.few_shot_source), ids) if ids else []
        return self._shots

    def run(self, ref: UnitRef) -> dict:
        from actorlearner.collect.execute import run_codes
        from actorlearner.collect.unit import collect_problem

        with self._lock:  # lazy loading happens once, whichever thread comes first
            problem = self._problem(ref.spec, ref.task_id)
            needs_shots = self.cfg.samples_per_problem and (
                self.cfg.sample_given or not problem.metadata.get("initial_code")
            )
            shots = self.shots() if needs_shots else []
            models = self.models()
        return collect_problem(
            problem,
            ref.spec,
            ref.uid,
            self.cfg,
            models,
            lambda p, codes: run_codes(p, codes, self.limits),
            shots,
        )


def load_source(cfg: CollectConfig, spec: str):
    from envs.sources import load_problems

    problems = load_problems(spec, **cfg.source_options.get(spec, {}))
    limit = cfg.limit_for(spec)
    return problems[:limit] if limit else problems


def plan_units(cfg: CollectConfig) -> list[UnitRef]:
    refs, seen = [], set()
    for spec in cfg.problems:
        for p in load_source(cfg, spec):
            uid = f"{spec}/{p.task_id}"
            if uid in seen:
                raise ValueError(
                    f"task id {p.task_id!r} appears twice in {spec}; task ids must be unique"
                )
            seen.add(uid)
            refs.append(UnitRef(spec, p.task_id, uid))
    return refs


def _check_out_dir(out: Path, cfg: CollectConfig) -> None:
    """A rerun into the same directory must use the same data-defining settings."""
    import json

    path = out / CONFIG_FILE
    current = cfg.fingerprint()
    if path.exists():
        before = json.loads(path.read_text())
        diff = sorted(k for k in set(before) | set(current) if before.get(k) != current.get(k))
        if diff:
            raise ValueError(
                f"{out} holds a collection made with different settings ({', '.join(diff)}); "
                "resume with the same settings, or pass a new --out directory"
            )
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, current)


def preflight(cfg: CollectConfig) -> None:
    """Fail before any work on a missing policy directory or an unreachable teacher."""
    uses = {cfg.refiner} | ({cfg.sampler} if cfg.samples_per_problem else set())
    if "policy" in uses:
        from actorlearner.models import check_model_path

        check_model_path(cfg.policy)
    if "teacher" in uses:
        from actorlearner.teacher import TeacherClient, TeacherError, TeacherUnreachable

        try:
            TeacherClient(cfg.teacher).check()
        except TeacherUnreachable:
            raise
        except TeacherError:  # it answered; some endpoints do not serve /models
            pass


def run_collect(cfg: CollectConfig, show_progress: bool = True, print_table: bool = True) -> dict:
    """Run (or resume) a collection into `cfg.out`; returns the summary (Table 1 rows)."""
    cfg.validate()
    preflight(cfg)
    out = Path(cfg.out)
    _check_out_dir(out, cfg)
    started = time.time()
    refs = plan_units(cfg)
    store = UnitStore(out / UNITS_FILE)
    try:
        todo = [r for r in refs if r.uid not in store]
        counts: Counter = Counter()
        for r in refs:
            if r.uid in store:
                counts.update(count_unit(store.units[r.uid]))
        bar = _progress(len(refs), len(refs) - len(todo), show_progress)
        bar.set_postfix(running_counts(counts))

        def done(unit: dict) -> None:
            store.append(unit)
            counts.update(count_unit(unit))
            bar.set_postfix(running_counts(counts), refresh=False)
            bar.update(1)

        labels = _execute(cfg, todo, done)
        bar.close()
        units = [store.units[r.uid] for r in refs]
    finally:
        store.close()
    return finalize(cfg, units, labels, started, print_table)


def _progress(total: int, initial: int, show: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="collect", unit="problem", disable=not show)


def _execute(cfg: CollectConfig, todo: list[UnitRef], done) -> dict:
    if cfg.num_workers == 0:
        worker = Collector(cfg)
        for ref in todo:
            done(worker.run(ref))
        return _labels(cfg)
    return _execute_ray(cfg, todo, done)


def _labels(cfg: CollectConfig) -> dict[str, str | None]:
    def label(kind: str) -> str:
        return f"teacher:{cfg.teacher.model}" if kind == "teacher" else f"policy:{cfg.policy}"

    return {
        "sampler": label(cfg.sampler) if cfg.samples_per_problem else None,
        "refiner": label(cfg.refiner) if cfg.refiner != "reference" else "reference",
    }


def init_ray(address: str = "", num_cpus: int = 0, attempts: int = 3) -> None:
    """Start or join Ray for a collection run (see `actorlearner.raycluster`)."""
    from actorlearner.raycluster import start_or_join

    start_or_join(address, num_cpus, attempts=attempts, log_to_driver=False)


def _execute_ray(cfg: CollectConfig, todo: list[UnitRef], done) -> dict:
    import ray

    if not todo:
        return _labels(cfg)
    started_here = not ray.is_initialized()
    if started_here:
        init_ray(cfg.ray_address, cfg.num_cpus)
    try:
        _farm_out(cfg, todo, done)
    finally:
        if started_here:
            ray.shutdown()
    return _labels(cfg)


def _farm_out(cfg: CollectConfig, todo: list[UnitRef], done) -> None:
    """Keep each actor busy with `units_per_worker` concurrent units (+ as many queued);
    store results in completion order."""
    import ray

    from actorlearner.teacher import api_key_from_env

    actor_cls: Any = ray.remote(Collector).options(
        num_cpus=cfg.cpus_per_worker,
        max_restarts=1,
        max_task_retries=1,
        max_concurrency=max(1, cfg.units_per_worker),
    )
    per_worker = 2 * max(1, cfg.units_per_worker)
    key = api_key_from_env(cfg.teacher)  # handed over in memory, never stored
    n = max(1, min(cfg.num_workers, len(todo)))
    workers: list[Any] = [actor_cls.remote(cfg, key) for _ in range(n)]
    queue, inflight = list(reversed(todo)), {}
    try:
        for _ in range(per_worker):
            for w in workers:
                if queue:
                    ref = queue.pop()
                    inflight[w.run.remote(ref)] = (w, ref)
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1)
            w, ref = inflight.pop(ready[0])
            try:
                unit = ray.get(ready[0])
            except Exception as exc:
                raise RuntimeError(
                    f"collecting {ref.uid} failed: {exc}. Finished problems are saved; "
                    "rerun the same command to resume."
                ) from exc
            done(unit)
            if queue:
                nxt = queue.pop()
                inflight[w.run.remote(nxt)] = (w, nxt)
    finally:
        for w in workers:
            ray.kill(w)


def finalize(
    cfg: CollectConfig, units: list[dict], labels: dict, started: float, show: bool
) -> dict:
    """Write every dataset from the unit records (atomically) and the Table-1 summary."""
    out, rid = Path(cfg.out), cfg.run_id()
    counts = {
        "sft.jsonl": atomic_write_jsonl(
            out / "sft.jsonl",
            datasets.sft_records(units, rid, cfg.refine_temperature, cfg.require_explanation),
        ),
        "failures.jsonl": atomic_write_jsonl(
            out / "failures.jsonl", datasets.failure_records(units, rid, cfg.refine_temperature)
        ),
        "pool.jsonl": atomic_write_jsonl(
            out / "pool.jsonl", datasets.pool_records(units, rid, cfg.pool_min_references)
        ),
        "references.jsonl": atomic_write_jsonl(
            out / "references.jsonl", datasets.reference_records(units, rid)
        ),
        "correct.jsonl": atomic_write_jsonl(
            out / "correct.jsonl", datasets.correct_records(units, rid)
        ),
    }
    summary = summarize(units)
    summary["records"] = counts
    atomic_write_json(out / "summary.json", summary)
    atomic_write_json(out / "provenance.json", provenance.build(cfg, labels, counts, started))
    if show:
        from rich.console import Console

        Console().print(table(summary))
    return summary
