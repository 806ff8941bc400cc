"""Typed configs of a group of rollout actors: `RolloutSettings` is the run config's
`rollout:` section, `RolloutConfig` adds what a run derives (model, env, seed)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from actorlearner.engines.base import SamplingParams

ENGINES = ("hf", "vllm")
WEIGHT_SYNC = ("auto", "object_store", "collective")  # see actorlearner.rollout.weight_sync


@dataclass
class RolloutSettings:
    """How many actors, what each owns, how they sample and react to failures."""

    engine: str = "hf"  # hf | vllm
    num_actors: int = 1
    envs_per_actor: int = 8
    num_cpus_per_actor: float = 1.0
    num_gpus_per_actor: float = 0.0  # fractional values colocate actors with learner ranks
    # sampling of training episodes (the probe and evaluation decode greedily)
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    max_new_tokens: int = 192
    # run env steps of one half of the slots while the other half generates: True, False,
    # or "auto" (only while env steps are slow next to a generate call)
    overlap_env: bool | str = "auto"
    max_context_tokens: int | None = None  # end an episode whose context reaches this length
    torch_threads: int = 0  # intra-op threads per actor; 0 = its CPUs (num_cpus_per_actor)
    # fault handling
    max_restarts: int = 2  # Ray restarts of a dead actor before it is replaced by a new one
    restart_timeout_s: float = 300.0  # a restarting actor not back by then is replaced
    max_chunk_retries: int = 3  # a chunk of episodes that fails this often raises an error
    call_timeout_s: float = 600.0  # a rollout call running longer is presumed hung: actor killed
    poll_s: float = 1.0  # how often the driver wakes to check deadlines
    episodes_per_call: int = 0  # chunk size handed to an actor per call; 0 = an even split
    # take weights the learner publishes while an episode runs, at its next turn boundary
    # (async mode; each token keeps the version that sampled it)
    weights_between_turns: bool = False
    # how new weights reach the actors: object_store, collective (learner rank 0 broadcasts
    # buckets: gloo, or NCCL between GPUs), or auto (collective when actors have GPUs of
    # their own and take no weights between turns)
    weight_sync: str = "auto"
    weight_bucket_mb: float = 256.0  # size of one broadcast bucket in collective pushes

    @property
    def sampling(self) -> SamplingParams:
        return SamplingParams(
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
        )

    @property
    def threads(self) -> int:
        return self.torch_threads or max(1, int(self.num_cpus_per_actor))


@dataclass
class RolloutConfig(RolloutSettings):
    """The settings plus what each actor plays: model, env, grouping, seed.

    `env_kwargs` go to ``gymnasium.make(env_id, **env_kwargs)`` (for CodeRefine-v0:
    problems, max_turns, rewards, pool, ...). `env_fn`, if set, replaces that call: a
    picklable zero-argument factory run inside each actor.
    """

    model_path: str = ""
    engine_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. dtype, device, lora
    env_id: str = "CodeRefine-v0"
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    env_fn: Callable[[], Any] | None = None
    # episodes per drawn start (same problem and wrong code), for a per-problem baseline
    group_size: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.model_path:
            raise ValueError("RolloutConfig.model_path is required (a model directory)")
        for name in ("num_actors", "envs_per_actor", "group_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"RolloutConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.engine not in ENGINES:
            raise ValueError(f"RolloutConfig.engine must be 'hf' or 'vllm', got {self.engine!r}")
        from actorlearner.rollout.weight_sync import check_mode

        check_mode(self.weight_sync, self.weights_between_turns)
        if self.weight_bucket_mb <= 0:
            raise ValueError(f"rollout.weight_bucket_mb must be > 0, got {self.weight_bucket_mb}")
        if self.num_gpus_per_actor > 0 and self.engine == "hf":
            self.engine_kwargs.setdefault("device", "cuda")
