"""Resource plan: what the actors and learners of a run ask Ray for, checked up front."""

from __future__ import annotations

import math
from dataclasses import dataclass

from actorlearner.config import ConfigError, RunConfig


@dataclass
class ResourcePlan:
    rollout_cpus: float
    rollout_gpus: float
    learner_cpus: float
    learner_gpus: float

    @property
    def cpus(self) -> float:
        return self.rollout_cpus + self.learner_cpus

    @property
    def gpus(self) -> float:
        return self.rollout_gpus + self.learner_gpus

    def describe(self, cfg: RunConfig) -> str:
        r, lr = cfg.rollout, cfg.learner
        lines = [
            f"rollout: {r.num_actors} actor(s) x {r.envs_per_actor} envs, engine={r.engine}, "
            f"{r.num_cpus_per_actor} CPU + {r.num_gpus_per_actor} GPU each",
            f"learner: {lr.num_ranks} rank(s), {lr.num_cpus_per_rank} CPU + "
            f"{lr.num_gpus_per_rank} GPU each, deepspeed={lr.deepspeed_config}",
            f"total: {self.cpus:g} CPU, {self.gpus:g} GPU"
            + (" (rollout and learner colocated on shared GPUs)" if self.colocated(cfg) else ""),
        ]
        return "\n".join(lines)

    def colocated(self, cfg: RunConfig) -> bool:
        fractional = 0 < cfg.rollout.num_gpus_per_actor < 1 or 0 < cfg.learner.num_gpus_per_rank < 1
        return fractional and self.gpus > 0


def make_plan(cfg: RunConfig) -> ResourcePlan:
    r, lr = cfg.rollout, cfg.learner
    if r.engine == "vllm" and r.num_gpus_per_actor <= 0:
        raise ConfigError(
            "rollout.engine=vllm needs rollout.num_gpus_per_actor > 0 (vLLM runs on GPUs)"
        )
    for name, value in (
        ("rollout.num_gpus_per_actor", r.num_gpus_per_actor),
        ("learner.num_gpus_per_rank", lr.num_gpus_per_rank),
    ):
        if value > 1 and not float(value).is_integer():
            raise ConfigError(
                f"{name}={value}: fractional GPU shares above 1 are impossible; use a whole number"
            )
    return ResourcePlan(
        rollout_cpus=r.num_actors * r.num_cpus_per_actor,
        rollout_gpus=r.num_actors * r.num_gpus_per_actor,
        learner_cpus=lr.num_ranks * lr.num_cpus_per_rank,
        learner_gpus=lr.num_ranks * lr.num_gpus_per_rank,
    )


def check_fits(plan: ResourcePlan, available: dict[str, float]) -> None:
    """Fail before any work if the cluster cannot hold the plan."""
    cpus, gpus = available.get("CPU", 0.0), available.get("GPU", 0.0)
    if plan.cpus > cpus + 1e-9:
        raise ConfigError(
            f"the run needs {plan.cpus:g} CPUs but the cluster has {cpus:g}: lower "
            "rollout.num_actors / rollout.num_cpus_per_actor / learner.num_cpus_per_rank"
        )
    if plan.gpus > 0 and math.ceil(plan.gpus - 1e-9) > gpus + 1e-9:
        raise ConfigError(
            f"the run needs {plan.gpus:g} GPUs but the cluster has {gpus:g}: run it on a GPU "
            "cluster or use configs/tiny_cpu.yaml"
        )
