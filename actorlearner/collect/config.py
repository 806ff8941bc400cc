"""`CollectConfig`: everything that decides what `actorlearner collect` produces."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from actorlearner.teacher import TeacherConfig

MODELS = ("policy", "teacher")
REFINERS = ("reference", "policy", "teacher")


@dataclass
class CollectSettings:
    """What collection produces and how fast: the run config's `collect:` section.
    Defaults are the paper's (20 samples at T=1.0, K=10 replies at T=0.8)."""

    # Step 1: initial solutions (3-shot with MBPP prompts 2-4).
    sampler: str = "policy"  # policy | teacher
    samples_per_problem: int = 20
    sample_temperature: float = 1.0
    sample_max_tokens: int = 512
    few_shot_source: str = "mbpp:prompt"
    few_shot_ids: list[str] = field(default_factory=lambda: ["2", "3", "4"])  # task ids ending so
    sample_given: bool = False  # also sample when a problem carries its own buggy program

    # Step 3: explanation + refinement replies.
    refiner: str = "teacher"  # reference (given references only) | policy | teacher
    refinements_per_wrong: int = 10
    refine_temperature: float = 0.8
    refine_max_tokens: int = 768
    teacher: TeacherConfig = field(default_factory=TeacherConfig)

    # Execution and data.
    timeout_s: float = 4.0  # per program, all its tests together
    pool_min_references: int = 1  # a wrong solution enters pool.jsonl with at least this many fixes
    require_explanation: bool = True  # SFT keeps only verified replies that explain

    # Scale.
    num_workers: int = 2  # Ray actors; 0 = run in this process (debugging)
    cpus_per_worker: float = 1.0
    units_per_worker: int = 1  # problems a worker runs at once (threads); raise for a slow teacher


@dataclass
class CollectConfig(CollectSettings):
    """The settings plus what a run derives: problems, output, policy, engine, cluster."""

    problems: list[str] = field(default_factory=lambda: ["mbpp:train"])  # specs or JSONL paths
    out: str = "runs/collect"
    max_problems: int = 0  # per source; 0 = all
    problem_limits: dict[str, int] = field(
        default_factory=dict
    )  # spec -> cap (overrides max_problems)
    source_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # spec -> loader kwargs
    seed: int = 0
    policy: str = ""  # local path (or hub name) of the policy, for sampler/refiner=policy
    engine: str = "hf"
    dtype: str = "auto"
    ray_address: str = (
        ""  # "" = join $RAY_ADDRESS / a running cluster, else start one; "local" = always start one
    )
    num_cpus: int = 0  # CPUs of a local cluster started here; 0 = all cores

    def validate(self) -> None:
        if self.sampler not in MODELS:
            raise ValueError(f"sampler={self.sampler!r} must be one of {MODELS}")
        if self.refiner not in REFINERS:
            raise ValueError(f"refiner={self.refiner!r} must be one of {REFINERS}")
        uses_policy = self.refiner == "policy" or (
            self.sampler == "policy" and self.samples_per_problem > 0
        )
        if uses_policy and not self.policy:
            raise ValueError("sampler/refiner 'policy' needs --policy PATH (a model directory)")
        uses_teacher = self.refiner == "teacher" or (
            self.sampler == "teacher" and self.samples_per_problem > 0
        )
        if uses_teacher and not self.teacher.base_url:
            raise ValueError(
                "sampler/refiner 'teacher' needs --teacher-url (an OpenAI-compatible /v1 URL)"
            )
        if not self.problems:
            raise ValueError(
                "no problem sources given; pass --problems mbpp:train (or a JSONL path)"
            )
        for name in ("samples_per_problem", "refinements_per_wrong", "max_problems", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def limit_for(self, spec: str) -> int:
        """How many problems of `spec` to use (0 = all)."""
        return self.problem_limits.get(spec, self.max_problems)

    def fingerprint(self) -> dict[str, Any]:
        """The settings that change each problem's data: not where or how fast it is made,
        nor which problems are included (a collection can grow to more problems)."""
        d = dataclasses.asdict(self)
        for key in (
            "out",
            "num_workers",
            "cpus_per_worker",
            "units_per_worker",
            "ray_address",
            "num_cpus",
        ):
            d.pop(key)
        for key in ("problems", "max_problems", "problem_limits"):
            d.pop(key)
        for key in (
            "timeout_s",
            "max_retries",
            "backoff_s",
            "backoff_max_s",
            "concurrency",
            "api_key_env",
            "base_url",  # the same teacher may move to another address between runs
        ):
            d["teacher"].pop(key)
        return d

    def run_id(self) -> str:
        blob = json.dumps(self.fingerprint(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def from_run_config(run: Any, out: str, policy: str) -> CollectConfig:
    """The collection of a run (`actorlearner.config.RunConfig`): its `collect:` settings
    as they are, on the run's problems, seed, model and cluster.

    Synthetic sources are generated with `n=data.num_synthetic_train` (all of them are
    used); `data.max_problems_per_source` caps the benchmark sources only.
    """
    synthetic = [s for s in run.data.train if s.split(":")[0] == "synthetic"]
    settings = {f.name: getattr(run.collect, f.name) for f in dataclasses.fields(CollectSettings)}
    return CollectConfig(
        **settings,
        problems=list(run.data.train),
        out=out,
        max_problems=run.data.max_problems_per_source,
        problem_limits={s: 0 for s in synthetic},
        source_options={
            s: {"n": run.data.num_synthetic_train, "seed": run.seed} for s in synthetic
        },
        seed=run.seed,
        policy=policy,
        engine=run.rollout.engine,
        dtype=run.model.dtype,
        ray_address=run.ray.address,
        num_cpus=run.ray.num_cpus,
    )
