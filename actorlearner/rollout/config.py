"""Typed config of a group of rollout actors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from actorlearner.engines.base import SamplingParams


@dataclass
class RolloutConfig:
    """How many actors, what each owns, and how the group reacts to failures.

    `env_kwargs` go to ``gymnasium.make(env_id, **env_kwargs)`` (for CodeRefine-v0:
    problems, max_turns, rewards, pool, ...). `env_fn`, if set, replaces that call: a
    picklable zero-argument factory run inside each actor.
    """

    model_path: str
    engine: str = "hf"  # hf | vllm
    engine_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. dtype, device, lora
    num_actors: int = 1
    envs_per_actor: int = 8
    num_cpus_per_actor: float = 1.0
    num_gpus_per_actor: float = 0.0  # fractional values colocate actors with learner ranks
    env_id: str = "CodeRefine-v0"
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    env_fn: Callable[[], Any] | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)
    # run env steps of one half of the slots while the other half generates: True, False,
    # or "auto" (only while env steps are slow next to a generate call)
    overlap_env: bool | str = "auto"
    max_context_tokens: int | None = None  # end an episode whose context reaches this length
    # episodes per drawn start (same problem and wrong code), for a per-problem baseline
    group_size: int = 1
    seed: int = 0
    torch_threads: int = 1  # intra-op threads per actor (keep actors from fighting for cores)
    # fault handling
    max_restarts: int = 2  # Ray restarts of a dead actor before it is replaced by a new one
    restart_timeout_s: float = 300.0  # a restarting actor not back by then is replaced
    max_chunk_retries: int = 3  # a chunk of episodes that fails this often raises an error
    call_timeout_s: float = 600.0  # a rollout call running longer is presumed hung: actor killed
    poll_s: float = 1.0  # how often the driver wakes to check deadlines
    episodes_per_call: int = 0  # chunk size handed to an actor per call; 0 = an even split

    def __post_init__(self) -> None:
        for name in ("num_actors", "envs_per_actor", "group_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"RolloutConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.engine not in ("hf", "vllm"):
            raise ValueError(f"RolloutConfig.engine must be 'hf' or 'vllm', got {self.engine!r}")
        if self.num_gpus_per_actor > 0 and self.engine == "hf":
            self.engine_kwargs.setdefault("device", "cuda")
