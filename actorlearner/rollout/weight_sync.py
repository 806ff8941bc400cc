"""Moving policy weights from the learner to the rollout engines: two modes.

- object_store: rank 0 exports the engine-facing state (transformers names, LoRA merged;
  `actorlearner.learner.export`), it goes through the Ray object store once
  (`RolloutGroup.update_weights`) and every actor loads it in place (the vLLM engine hands
  it to its engine core bucket by bucket through CUDA IPC, which works because the engine
  core shares the actor's GPU). Needed for weights taken between turns (the board hands
  out object refs), and the right choice when a learner rank and an actor share a GPU.
- collective: learner rank 0 broadcasts buckets to every actor through a weight group
  (`actorlearner.rollout.collective`: gloo, or NCCL between GPUs; vLLM engines receive
  the bytes through vLLM's own NCCL group). Every learner rank drains the export (ZeRO-3
  gathers one module at a time), no full copy is made on the learner, and nothing passes
  through the driver. `auto` picks it when the actors have GPUs of their own.

`CollectiveSync` is the driver's side of the collective mode: it builds the group from
learner rank 0 and the live actors, rebuilds it when an actor restarted or a push
failed, and runs each push.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from actorlearner.rollout.config import WEIGHT_SYNC

if TYPE_CHECKING:
    from actorlearner.rollout.collective import GroupSpec

log = logging.getLogger(__name__)


def _failures() -> tuple[type[Exception], ...]:
    """What a call to a dead, restarted or stuck member raises (Ray loads lazily here)."""
    from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

    return RayActorError, GetTimeoutError, RayTaskError


def check_mode(mode: str, between_turns: bool) -> None:
    """One-line errors for a weight-sync setting that cannot work."""
    if mode not in WEIGHT_SYNC:
        raise ValueError(f"rollout.weight_sync={mode!r} is not one of {', '.join(WEIGHT_SYNC)}")
    if mode == "collective" and between_turns:
        raise ValueError(
            "rollout.weight_sync=collective cannot feed rollout.weights_between_turns (actors "
            "take those weights from the object store): set rollout.weight_sync=auto"
        )


def resolve_mode(mode: str, layout: Any, between_turns: bool) -> str:
    """`auto` -> collective when every rollout actor has a GPU no learner rank uses, else
    object_store (colocated on one GPU, CPU runs, weights taken between turns)."""
    check_mode(mode, between_turns)
    if mode != "auto":
        return mode
    separate = layout is not None and bool(layout.rollout)
    separate = separate and not set(layout.rollout) & set(layout.learner)
    return "collective" if separate and not between_turns else "object_store"


class CollectiveSync:
    """Driver side of collective pushes: group membership, rebuilds, one push at a time."""

    def __init__(self, bucket_mb: float, timeout_s: float, vllm_workers: int = 0):
        """`vllm_workers`: vLLM workers per actor (its tensor-parallel size); 0 for HF."""
        self.bucket_bytes = max(1, int(bucket_mb * 2**20))
        self.timeout_s = timeout_s
        self.vllm_workers = vllm_workers
        self.spec: GroupSpec | None = None
        self.members: list[int] = []
        self.generation = 0

    def push(self, learner: Any, actors: list[Any], members: list[int]) -> list[int]:
        """Send the learner's current weights to `members` (actor indices); returns those that
        did not get them (dead, restarted, timed out). Weights never reach this process."""
        import ray

        members, failed = self._alive(actors, members)
        if not members:
            return failed
        if self.spec is None or members != self.members:
            self._build(learner, actors, members)
        sends = learner.push_weights(self.bucket_bytes)
        receives = {actors[i].receive_weights.remote(): i for i in members}
        try:
            ray.get(sends, timeout=self.timeout_s)
        except _failures() as exc:
            log.warning("weight push failed on the learner (%s); rebuilding the group", exc)
            self.spec = None
            ray.wait(list(receives), num_returns=len(receives), timeout=self.timeout_s)
            return failed + members
        for ref, i in receives.items():
            try:
                ray.get(ref, timeout=self.timeout_s)
            except _failures() as exc:
                log.warning("actor %d missed a weight push (%s)", i, exc)
                failed.append(i)
                self.spec = None  # it left the group: rebuild before the next push
        return failed

    def _alive(self, actors: list[Any], members: list[int]) -> tuple[list[int], list[int]]:
        """Members that answer, and those that do not; an answer from another generation
        (a restarted actor) forces a rebuild."""
        import ray

        refs = {actors[i].weight_group_generation.remote(): i for i in members}
        alive, dead = [], []
        for ref, i in refs.items():
            try:
                generation = ray.get(ref, timeout=self.timeout_s)
            except _failures() as exc:
                log.warning("actor %d is not reachable for a weight push (%s)", i, exc)
                dead.append(i)
                continue
            alive.append(i)
            if self.spec is None or generation != self.spec.generation:
                self.spec = None
        return alive, dead

    def _build(self, learner: Any, actors: list[Any], members: list[int]) -> None:
        """A new group: learner rank 0 and `members`, all joining at once."""
        import ray

        from actorlearner.rollout.collective import GroupSpec

        address, port, device = learner.weight_endpoint()
        devices = ray.get([actors[i].weight_device.remote() for i in members])
        backend = "nccl" if {device, *devices} == {"cuda"} and not self.vllm_workers else "gloo"
        vllm_port = learner.weight_endpoint()[1] if self.vllm_workers else 0
        self.generation += 1
        spec = GroupSpec(
            address,
            port,
            len(members) + 1,
            backend,
            self.generation,
            self.timeout_s,
            vllm_port,
            self.vllm_workers or 1,
        )
        joins = [learner.join_weight_group(spec)]
        joins += [actors[i].join_weight_group.remote(spec, k + 1) for k, i in enumerate(members)]
        ray.get(joins, timeout=self.timeout_s)
        self.spec, self.members = spec, list(members)
        log.info(
            "weight group %d: learner rank 0 + actors %s (%s)", spec.generation, members, backend
        )
