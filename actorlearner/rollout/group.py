"""A group of Ray rollout actors: work split into chunks, versioned weight sync, faults.

The driver never blocks on one actor: it waits on all outstanding calls with a
timeout, and an actor that dies (or runs past `call_timeout_s`) has its chunk put
back in the queue. Ray restarts the actor (`max_restarts`); the group then "probes"
it by re-sending the current weights, and only gives it work once that succeeds. An
actor that stays dead (restarts used up, or not back within `restart_timeout_s`) is
replaced by a new one.

Weights reach the actors one of two ways (`rollout.weight_sync`, see
`actorlearner.rollout.weight_sync`): through the object store, or broadcast by learner
rank 0 to a weight group. In the collective mode a probe only waits for the actor to
answer; the actor then stays out of work until a push (the next regular one, or at
once when no other actor is left) rebuilds the group with it and sends it the weights.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError

from actorlearner.engines.base import SamplingParams
from actorlearner.placement import vllm_memory_fraction
from actorlearner.rollout.actor import RolloutWorker
from actorlearner.rollout.config import RolloutConfig
from actorlearner.rollout.weight_sync import CollectiveSync, resolve_mode
from actorlearner.trajectory import Trajectory

log = logging.getLogger(__name__)


def actor_config(cfg: RolloutConfig, index: int, sync_mode: str = "object_store") -> RolloutConfig:
    """Actor `index`'s config: its engine's own sampling seed (seeded calls differ between
    actors) and, for vLLM, the memory fraction of its GPU share (a colocated learner rank
    holds the rest) and its weight-transfer backend (NCCL for collective pushes)."""
    kwargs = dict(cfg.engine_kwargs)
    kwargs.setdefault("seed", cfg.seed + 100_003 * index)
    if cfg.engine == "vllm":
        kwargs.setdefault("gpu_memory_utilization", vllm_memory_fraction(cfg.num_gpus_per_actor))
        kwargs.setdefault("weight_transfer", "nccl" if sync_mode == "collective" else "ipc")
    return dataclasses.replace(cfg, engine_kwargs=kwargs)


@dataclass
class _Probe:
    actor: int
    version: int
    deadline: float


@dataclass
class _Call:
    actor: int
    episodes: int
    attempts: int
    deadline: float
    offset: int | None = None


class RolloutGroup:
    """`num_actors` rollout actors behind one `rollout()` call."""

    def __init__(self, cfg: RolloutConfig, placement: Any = None):
        """`placement`: an `actorlearner.placement.Placement`; actor j then runs in its bundle."""
        if not ray.is_initialized():
            raise RuntimeError("call ray.init(...) before creating a RolloutGroup")
        self.cfg = cfg
        self.placement = placement
        layout = placement.layout if placement is not None else None
        self.sync_mode = resolve_mode(cfg.weight_sync, layout, cfg.weights_between_turns)
        self._collective: CollectiveSync | None = None
        if self.sync_mode == "collective":
            workers = (
                int(cfg.engine_kwargs.get("tensor_parallel_size", 1)) if cfg.engine == "vllm" else 0
            )
            self._collective = CollectiveSync(cfg.weight_bucket_mb, cfg.call_timeout_s, workers)
        self._learner: Any = None  # the learner of the last collective push
        self._stale: set[int] = set()  # alive, but waiting for a push (collective mode)
        self._cls = ray.remote(RolloutWorker)
        self.actors = [self._spawn(i) for i in range(cfg.num_actors)]
        self.version = 0
        self._weights: ray.ObjectRef | None = None
        self._probes: dict[ray.ObjectRef, _Probe] = {}  # actors on their way back
        self._failed_pushes = 0  # collective pushes in a row that reached no actor
        self.stats = {"actor_failures": 0, "chunk_retries": 0, "replaced_actors": 0}

    def _spawn(self, index: int) -> Any:
        strategy = self.placement.strategy("rollout", index) if self.placement else None
        return self._cls.options(
            num_cpus=self.cfg.num_cpus_per_actor,
            num_gpus=self.cfg.num_gpus_per_actor,
            max_restarts=self.cfg.max_restarts,
            max_task_retries=0,  # the group retries chunks itself, with fresh weights
            # without a placement group, spread the actors (and their sandboxes) over the nodes
            scheduling_strategy=strategy or "SPREAD",
        ).remote(actor_config(self.cfg, index, self.sync_mode), index)

    @property
    def recovering(self) -> set[int]:
        """Actors out of work: restarting (probed) or waiting for a collective push."""
        return self._probing | self._stale

    def wait_ready(self, timeout_s: float = 300.0) -> list[dict]:
        """Block until every actor is up with the current weights; return their info."""
        deadline = time.monotonic() + timeout_s
        while self._probes or self._stale:
            if time.monotonic() > deadline:
                raise TimeoutError(f"actors {sorted(self.recovering)} not back in {timeout_s} s")
            if not self._probes:
                self._push_collective()
                continue
            done, _ = ray.wait(list(self._probes), num_returns=1, timeout=self.cfg.poll_s)
            for ref in done:
                self._probe_done(ref, deque())
        return self.info(timeout_s=max(1.0, deadline - time.monotonic()))

    # ------------------------------------------------------------------ weights
    def stage_weights(self, learner: Any) -> ray.ObjectRef | None:
        """The learner's weights in the object store (object_store mode); None in the
        collective mode, where `push_weights` sends them straight from learner rank 0."""
        if self.sync_mode == "collective":
            return None
        return ray.put(learner.state_dict_for_actors())

    def push_weights(self, learner: Any, staged: ray.ObjectRef | None = None) -> None:
        """Every actor gets the learner's current weights, the way `rollout.weight_sync`
        says; `staged`: what `stage_weights` returned for this version, if called."""
        version = learner.version
        if self.sync_mode != "collective":
            self.update_weights(
                staged if staged is not None else learner.state_dict_for_actors(), version
            )
            return
        self._learner, self.version = learner, int(version)
        self._stale |= {i for i in range(len(self.actors)) if i not in self._probing}
        self._push_collective()

    @property
    def _probing(self) -> set[int]:
        return {p.actor for p in self._probes.values()}

    def _push_collective(self) -> None:
        """One collective push to the actors waiting for weights; those it misses are probed."""
        assert self._collective is not None and self._learner is not None
        members = sorted(self._stale)
        failed = self._collective.push(self._learner, self.actors, members)
        self._stale.clear()
        for i in failed:
            self._start_probe(i)
        if failed and len(failed) == len(members):
            self._failed_pushes += 1
            if self._failed_pushes > self.cfg.max_chunk_retries:
                raise RuntimeError(
                    f"{self._failed_pushes} weight pushes in a row reached no actor; check the "
                    "learner and actor logs (ports, NCCL, memory)"
                )
        else:
            self._failed_pushes = 0

    def update_weights(self, state: dict[str, Any] | ray.ObjectRef, version: int) -> None:
        """Put the state in the object store once; every actor loads it as `version`."""
        ref = state if isinstance(state, ray.ObjectRef) else ray.put(state)
        self._weights, self.version = ref, int(version)
        busy = self.recovering  # their probes re-send the newest weights when they finish
        calls = {
            a.update_weights.remote(ref, version): i
            for i, a in enumerate(self.actors)
            if i not in busy
        }
        for call, i in calls.items():
            try:
                ray.get(call, timeout=self.cfg.call_timeout_s)
            except (RayActorError, GetTimeoutError) as exc:
                log.warning("actor %d missed weights v%d (%s); recovering it", i, version, exc)
                self._start_probe(i)

    # ------------------------------------------------------------------ rollouts
    def rollout(
        self, num_episodes: int, sampling: SamplingParams | None = None, fixed: bool = False
    ) -> list[Trajectory]:
        """Play `num_episodes` episodes across the actors; always returns all of them.
        `fixed`: replay the first `num_episodes` fixed starts (the same ones every call)."""
        sampling = sampling or self.cfg.sampling
        sizes = self._chunks(num_episodes)
        offsets = [sum(sizes[:i]) if fixed else None for i in range(len(sizes))]
        queue = deque((n, 0, off) for n, off in zip(sizes, offsets, strict=True))
        busy = self.recovering
        idle = deque(i for i in range(len(self.actors)) if i not in busy)
        pending: dict[ray.ObjectRef, _Call] = {}
        out: list[Trajectory] = []
        while queue or pending:
            while queue and idle:
                i = idle.popleft()
                n, attempts, offset = queue.popleft()
                ref = self.actors[i].rollout.remote(n, sampling, self.version, offset)
                deadline = time.monotonic() + self.cfg.call_timeout_s
                pending[ref] = _Call(i, n, attempts, deadline, offset)
            if not pending and not idle and not self._probes and self._stale:
                self._push_collective()  # the actors left wait for weights: send them now
                idle.extend(i for i in range(len(self.actors)) if i not in self.recovering)
                continue
            if not pending and not self._probes:
                raise RuntimeError("no rollout actor is left to run the remaining episodes")
            done, _ = ray.wait([*pending, *self._probes], num_returns=1, timeout=self.cfg.poll_s)
            for ref in done:
                if ref in self._probes:
                    self._probe_done(ref, idle)
                    continue
                call = pending.pop(ref)
                try:
                    out.extend(ray.get(ref))
                    idle.append(call.actor)
                except RayActorError as exc:
                    self._requeue(call, exc, queue)
                    self._start_probe(call.actor)
            self._kill_overdue(pending)
        return out

    def _chunks(self, num_episodes: int) -> list[int]:
        size = self.cfg.episodes_per_call or -(-num_episodes // len(self.actors))
        k = self.cfg.group_size
        size = max(k, -(-size // k) * k)  # whole groups per call: a group never spans actors
        return [min(size, num_episodes - s) for s in range(0, num_episodes, size)]

    def _requeue(self, call: _Call, exc: Exception, queue: deque) -> None:
        """Put a dead actor's chunk back at the head of the queue (bounded retries)."""
        self.stats["actor_failures"] += 1
        if call.attempts + 1 > self.cfg.max_chunk_retries:
            raise RuntimeError(
                f"a chunk of {call.episodes} episodes failed {call.attempts + 1} times; last "
                f"error on actor {call.actor}: {exc}. Check the actor logs (memory, env crashes)"
            ) from exc
        log.warning("actor %d died (%s); retrying its %d episodes", call.actor, exc, call.episodes)
        self.stats["chunk_retries"] += 1
        queue.appendleft((call.episodes, call.attempts + 1, call.offset))

    # ------------------------------------------------------------------ recovery
    def _start_probe(self, i: int, deadline: float | None = None) -> None:
        """Re-send the current weights to actor `i` (a restarted actor starts from the initial
        weights); the actor gets work again once this call succeeds. Collective mode: only
        wait for it to answer (it then waits for a push)."""
        actor = self.actors[i]
        if self._weights is not None and self._collective is None:
            ref = actor.update_weights.remote(self._weights, self.version)
        else:
            ref = actor.info.remote()
        if deadline is None:
            deadline = time.monotonic() + self.cfg.restart_timeout_s
        self._probes[ref] = _Probe(i, self.version, deadline)

    def _probe_done(self, ref: ray.ObjectRef, idle: deque) -> None:
        probe = self._probes.pop(ref)
        try:
            ray.get(ref)
            if self._collective is not None and self._learner is not None:
                self._stale.add(probe.actor)  # back, with old weights: the next push sends them
            elif probe.version != self.version:  # weights moved on while it was restarting
                self._start_probe(probe.actor, probe.deadline)
            else:
                idle.append(probe.actor)
            return
        except ActorUnavailableError:  # still restarting: ask again shortly
            if time.monotonic() < probe.deadline:
                time.sleep(min(0.5, self.cfg.poll_s))
                self._start_probe(probe.actor, probe.deadline)
                return
        except RayActorError:  # dead for good (restarts used up)
            pass
        self._replace(probe.actor)
        self._start_probe(probe.actor)

    def _replace(self, i: int) -> None:
        log.warning("replacing rollout actor %d with a new one", i)
        ray.kill(self.actors[i], no_restart=True)
        self.actors[i] = self._spawn(i)
        self.stats["replaced_actors"] += 1

    def _kill_overdue(self, pending: dict[ray.ObjectRef, _Call]) -> None:
        now = time.monotonic()
        for call in pending.values():
            if now > call.deadline:
                log.warning("actor %d exceeded call_timeout_s; killing it", call.actor)
                ray.kill(self.actors[call.actor], no_restart=False)
                call.deadline = float("inf")  # its call now fails and is retried

    def info(self, timeout_s: float = 60.0) -> list[dict]:
        return ray.get([a.info.remote() for a in self.actors], timeout=timeout_s)

    def shutdown(self) -> None:
        for a in self.actors:
            ray.kill(a, no_restart=True)
        self.actors = []
        self._probes.clear()
        self._stale.clear()
