"""The rollout actor: one engine, a batch of env copies, episodes in, trajectories out.

`RolloutWorker` is a plain class (usable and testable in-process); `RolloutGroup`
runs it as a Ray actor with the resources from `RolloutConfig`.
"""

from __future__ import annotations

import os
from typing import Any

from actorlearner.engines.base import SamplingParams
from actorlearner.rollout.config import RolloutConfig
from actorlearner.rollout.weight_board import find_board
from actorlearner.trajectory import Trajectory


class StaleWeightsError(RuntimeError):
    """A rollout was asked for a policy version this actor does not hold."""


def make_env(cfg: RolloutConfig) -> Any:
    """The actor's env: `env_fn()`, else `gymnasium.make(env_id, **env_kwargs)` (the run's
    `imports` have registered user env ids in this worker before it starts)."""
    if cfg.env_fn is not None:
        return cfg.env_fn()
    import gymnasium

    import envs  # noqa: F401  (registers CodeRefine-v0)

    return gymnasium.make(cfg.env_id, **cfg.env_kwargs)


class RolloutWorker:
    """Owns an engine and `envs_per_actor` envs; plays episodes on request."""

    def __init__(self, cfg: RolloutConfig, index: int = 0):
        import torch

        from actorlearner.engines import make_engine
        from actorlearner.rollout.runner import EpisodeRunner

        torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed + 7919 * index)
        self.cfg = cfg
        self.index = index
        self.engine = make_engine(cfg.engine, cfg.model_path, **cfg.engine_kwargs)
        envs = [make_env(cfg) for _ in range(cfg.envs_per_actor)]
        self.runner = EpisodeRunner(
            self.engine,
            self.engine.tokenizer,  # type: ignore[attr-defined]
            envs,
            overlap=cfg.overlap_env,
            seed=cfg.seed + 100_003 * index,
            max_context_tokens=cfg.max_context_tokens,
            group_size=cfg.group_size,
        )
        self._weight_group: Any = None  # collective pushes (rollout/collective.py)
        self._board: Any = None  # the run's WeightBoard, found on first use
        self._between_turns = False  # take published weights at turn boundaries (this call)
        if cfg.weights_between_turns:
            self.runner.before_generate = self._take_published_weights

    def rollout(
        self,
        num_episodes: int,
        sampling: SamplingParams | None = None,
        policy_version: int | None = None,
        fixed_offset: int | None = None,
    ) -> list[Trajectory]:
        """Play `num_episodes` episodes; with `policy_version`, refuse to run on other weights.
        With `fixed_offset`, replay the fixed starts from that offset (see EpisodeRunner)."""
        if policy_version is not None and policy_version > self.engine.version:
            raise StaleWeightsError(
                f"actor {self.index} holds policy version {self.engine.version}, asked for "
                f"{policy_version}; send the weights with update_weights first"
            )
        self._between_turns = fixed_offset is None  # a probe scores one version throughout
        try:
            trajs = self.runner.run(num_episodes, sampling or self.cfg.sampling, fixed_offset)
        finally:
            self._between_turns = False
        for t in trajs:
            t.stats["actor"] = self.index
        return trajs

    def update_weights(self, state: dict[str, Any], version: int) -> int:
        """Load new weights (a Ray ObjectRef argument arrives here already resolved).
        Versions this actor already holds (taken between turns) are not loaded again."""
        if version != self.engine.version or not self.cfg.weights_between_turns:
            self.engine.load_weights(state, version)
        return self.engine.version

    # ---------------------------------------------------- collective weight pushes
    def weight_device(self) -> str:
        """Where pushed buckets land: the engine's device type (vLLM: always cuda)."""
        device = getattr(self.engine, "device", None)
        return device.type if device is not None else "cuda"

    def weight_group_generation(self) -> int:
        """The weight group this process is in (-1: none, e.g. after a restart)."""
        return self._weight_group.spec.generation if self._weight_group is not None else -1

    def join_weight_group(self, spec: Any, rank: int) -> None:
        from actorlearner.rollout.collective import WeightGroup

        if self._weight_group is not None:
            self._weight_group.close()
        self._weight_group = WeightGroup(spec, rank)
        if spec.vllm_port:
            self.engine.init_weight_transfer(spec, rank)  # type: ignore[attr-defined]

    def receive_weights(self) -> int:
        """Take part in a push from learner rank 0: load each bucket as it arrives, then
        hold the version it was sent as. Returns that version."""
        from actorlearner.rollout.collective import receive_weights

        if self._weight_group is None:
            raise RuntimeError(f"actor {self.index} is in no weight group (restarted?)")
        engine: Any = self.engine
        if self._weight_group.spec.vllm_port:  # vLLM's workers receive the bytes themselves
            engine.begin_update()
            version = receive_weights(self._weight_group, None, engine.receive_bucket)
            engine.finish_update(version)
        else:
            version = receive_weights(self._weight_group, engine.load_bucket)
            engine.version = version
        return version

    def weights_fingerprint(self) -> str:
        """A digest of the engine's weights (HF engine): equal means bit-equal."""
        return self.engine.fingerprint()  # type: ignore[attr-defined]

    def _take_published_weights(self) -> None:
        """At a turn boundary: load the newest published weights, if newer than ours."""
        import ray

        if not self._between_turns:
            return
        self._board = self._board or find_board()
        if self._board is None:
            return
        newer = ray.get(self._board.newer_than.remote(self.engine.version))
        if newer is not None:
            version, (ref,) = newer
            self.engine.load_weights(ray.get(ref), version)
            self.runner.timings["weights_between_turns"] = (
                self.runner.timings.get("weights_between_turns", 0) + 1
            )

    def info(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "pid": os.getpid(),
            "version": self.engine.version,
            "timings": dict(self.runner.timings),
            **_node(),
        }

    def exit(self) -> None:
        """Die abruptly (for fault-handling tests and drills)."""
        os._exit(1)


def _node() -> dict[str, Any]:
    """The Ray node this worker runs on (empty outside Ray)."""
    import ray

    if not ray.is_initialized():
        return {}
    return {
        "node_id": ray.get_runtime_context().get_node_id(),
        "node_ip": ray.util.get_node_ip_address(),
    }
