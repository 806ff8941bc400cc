"""Resource plan: what the actors and learners of a run ask Ray for, checked up front."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from actorlearner.config import ConfigError, RunConfig
from actorlearner.placement import GpuLayout, Member, Placement, gpu_layout


@dataclass
class ResourcePlan:
    rollout_cpus: float
    rollout_gpus: float
    learner_cpus: float
    learner_gpus: float
    layout: GpuLayout | None = None  # one bundle per GPU (None on CPU-only runs)

    @property
    def cpus(self) -> float:
        return self.rollout_cpus + self.learner_cpus

    @property
    def gpus(self) -> float:
        """Whole GPUs the run reserves (one per bundle), else the plain sum of shares."""
        return self.layout.gpus if self.layout else self.rollout_gpus + self.learner_gpus

    def describe(self, cfg: RunConfig) -> str:
        r, lr = cfg.rollout, cfg.learner
        lines = [
            f"rollout: {r.num_actors} actor(s) x {r.envs_per_actor} envs, engine={r.engine}, "
            f"{r.num_cpus_per_actor} CPU + {r.num_gpus_per_actor} GPU each",
            f"learner: {lr.num_ranks} rank(s), {lr.num_cpus_per_rank} CPU + "
            f"{lr.num_gpus_per_rank} GPU each, deepspeed={lr.deepspeed_config}",
            f"total: {self.cpus:g} CPU, {self.gpus:g} GPU"
            + (" (rollout and learner colocated on shared GPUs)" if self.colocated() else ""),
        ]
        return "\n".join(lines + (self.layout.describe() if self.layout else []))

    def colocated(self, cfg: RunConfig | None = None) -> bool:
        """True when some GPU holds both a learner rank and a rollout actor."""
        return self.layout is not None and any(
            k in self.layout.learner for k in self.layout.rollout
        )


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
    _check_shares(cfg)
    return ResourcePlan(
        rollout_cpus=r.num_actors * r.num_cpus_per_actor,
        rollout_gpus=r.num_actors * r.num_gpus_per_actor,
        learner_cpus=lr.num_ranks * lr.num_cpus_per_rank,
        learner_gpus=lr.num_ranks * lr.num_gpus_per_rank,
        layout=layout_of(cfg),
    )


def layout_of(
    cfg: RunConfig, with_rollout: bool = True, cpus_per_rank: float | None = None
) -> GpuLayout | None:
    r, lr = cfg.rollout, cfg.learner
    cpus = lr.num_cpus_per_rank if cpus_per_rank is None else cpus_per_rank
    return gpu_layout(
        lr.num_ranks,
        Member(lr.num_gpus_per_rank, cpus),
        r.num_actors if with_rollout else 0,
        Member(r.num_gpus_per_actor, r.num_cpus_per_actor),
    )


def _check_shares(cfg: RunConfig) -> None:
    """Per GPU: a rank and an actor share one only if their shares fit on it together."""
    r, lr = cfg.rollout, cfg.learner
    a, g = r.num_gpus_per_actor, lr.num_gpus_per_rank
    if 0 < a < 1 and 0 < g < 1 and a + g > 1 + 1e-9:
        raise ConfigError(
            f"a GPU cannot hold a learner rank ({g:g}) and a rollout actor ({a:g}): their "
            "shares add up to more than 1; lower learner.num_gpus_per_rank or "
            "rollout.num_gpus_per_actor so they sum to <= 1"
        )


def placement_for(
    cfg: RunConfig, with_rollout: bool = True, cpus_per_rank: float | None = None
) -> Placement | None:
    """Reserve the run's GPU bundles (None on CPU-only runs); call after ray.init.
    SFT runs without actors (`with_rollout=False`) and may give ranks more CPUs."""
    layout = layout_of(cfg, with_rollout, cpus_per_rank)
    return Placement(layout) if layout else None


def planned_resources(cfg: RunConfig) -> dict[str, float]:
    """The resources of the cluster a run would use, without starting one: an explicit
    address (config or $RAY_ADDRESS) is joined and asked; otherwise the local cluster
    the run would start (ray.num_cpus or all cores, the GPUs torch sees)."""
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS", "")
    if address and address != "local":
        import ray

        ray.init(address=address, log_to_driver=False)
        try:
            return dict(ray.cluster_resources())
        finally:
            ray.shutdown()
    import torch

    cpus = cfg.ray.num_cpus or os.cpu_count() or 1
    return {"CPU": float(cpus), "GPU": float(torch.cuda.device_count())}


def check_fits(plan: ResourcePlan, available: dict[str, float]) -> None:
    """Fail before any work if the cluster cannot hold the plan (GPUs first: a GPU recipe
    on a CPU host is short of GPUs, whatever else)."""
    cpus, gpus = available.get("CPU", 0.0), available.get("GPU", 0.0)
    if plan.gpus > 0 and math.ceil(plan.gpus - 1e-9) > gpus + 1e-9:
        per_gpu = ""
        if plan.layout:
            n = len(plan.layout.learner)
            per_gpu = f"; {n} hold learner ranks, {plan.gpus - n:g} more hold only rollout actors"
        raise ConfigError(
            f"the run needs {plan.gpus:g} GPUs but the cluster has {gpus:g}{per_gpu}: run it "
            "on a GPU cluster or use configs/tiny_cpu.yaml"
        )
    if plan.cpus > cpus + 1e-9:
        raise ConfigError(
            f"the run needs {plan.cpus:g} CPUs but the cluster has {cpus:g}: lower "
            "rollout.num_actors / rollout.num_cpus_per_actor / learner.num_cpus_per_rank"
        )
