"""Which GPU each learner rank and rollout actor runs on: one Ray placement-group bundle per GPU.

Without a placement group Ray packs fractional GPU requests best-fit, so two learner
ranks can land on one GPU (NCCL refuses duplicate GPUs) and two vLLM engines on
another. Here every bundle is one GPU holding at most one learner rank and at most
one rollout actor: learner rank i sits in bundle i; rollout actor j shares bundle j
with rank j when both fit on one GPU (colocated), else it gets a GPU of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

_EPS = 1e-9


@dataclass(frozen=True)
class Member:
    """What one learner rank or rollout actor asks for."""

    gpus: float
    cpus: float


@dataclass
class GpuLayout:
    """Bundles (Ray resource dicts) and the bundle each rank / actor goes to."""

    bundles: list[dict[str, float]]
    learner: list[int]
    rollout: list[int]
    learner_share: float
    rollout_share: float

    @property
    def gpus(self) -> int:
        return int(sum(b["GPU"] for b in self.bundles))

    def describe(self) -> list[str]:
        lines = []
        for i, b in enumerate(self.bundles):
            who = [f"learner rank {r}" for r, k in enumerate(self.learner) if k == i]
            who += [f"rollout actor {a}" for a, k in enumerate(self.rollout) if k == i]
            lines.append(f"bundle {i}: {b['GPU']:g} GPU, {b['CPU']:g} CPU <- {', '.join(who)}")
        return lines


def _gpu_count(share: float) -> float:
    """GPUs a bundle reserves for one member: a whole GPU for a share up to 1."""
    return 1.0 if share <= 1 else float(math.ceil(share - _EPS))


def gpu_layout(ranks: int, rank: Member, actors: int, actor: Member) -> GpuLayout | None:
    """The per-GPU layout of a run, or None when nothing asks for a GPU."""
    if rank.gpus <= 0 and actor.gpus <= 0:
        return None
    bundles: list[dict[str, float]] = []
    learner: list[int] = []
    for _ in range(ranks if rank.gpus > 0 else 0):
        learner.append(len(bundles))
        bundles.append({"GPU": _gpu_count(rank.gpus), "CPU": rank.cpus})
    colocate = 0 < rank.gpus <= 1 and 0 < actor.gpus <= 1 and rank.gpus + actor.gpus <= 1 + _EPS
    rollout: list[int] = []
    for j in range(actors if actor.gpus > 0 else 0):
        if colocate and j < len(learner):
            bundles[j]["CPU"] += actor.cpus
            rollout.append(j)
        else:
            rollout.append(len(bundles))
            bundles.append({"GPU": _gpu_count(actor.gpus), "CPU": actor.cpus})
    return GpuLayout(bundles, learner, rollout, rank.gpus, actor.gpus)


def vllm_memory_fraction(share: float) -> float:
    """vLLM's gpu_memory_utilization for an actor holding `share` of a GPU: its share when
    colocated (the rest belongs to the learner rank), 0.9 of a GPU of its own."""
    return round(min(share, 0.9), 4) if share < 1 else 0.9


class Placement:
    """A created placement group and the layout it realises (driver side)."""

    def __init__(self, layout: GpuLayout, timeout_s: float = 120.0):
        import ray
        from ray.util.placement_group import placement_group

        self.layout = layout
        self.group = placement_group(layout.bundles, strategy="PACK")
        if not self.group.wait(timeout_s):
            ray.util.remove_placement_group(self.group)
            raise RuntimeError(
                f"Ray could not reserve {len(layout.bundles)} GPU bundles in {timeout_s:g} s "
                f"({layout.gpus} GPUs); check `ray status` for free GPUs"
            )

    def strategy(self, kind: str, index: int) -> Any:
        """Scheduling strategy for learner rank / rollout actor `index` (kind: learner|rollout);
        None for members that take no GPU (Ray schedules them anywhere)."""
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        bundles = self.layout.learner if kind == "learner" else self.layout.rollout
        if not bundles:
            return None
        return PlacementGroupSchedulingStrategy(
            placement_group=self.group,
            placement_group_bundle_index=bundles[index],
            placement_group_capture_child_tasks=True,
        )

    def remove(self) -> None:
        from ray.util import remove_placement_group

        remove_placement_group(self.group)
