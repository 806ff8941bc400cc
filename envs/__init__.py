"""Gymnasium environments, problem sources and reward terms.

Importing `envs` registers ``CodeRefine-v0`` with Gymnasium::

    import gymnasium as gym
    import envs  # noqa: F401
    env = gym.make("CodeRefine-v0", problems="synthetic:train", max_turns=3, rewards="ledex")

Ray users call `register_ray_env()` once (Ray is imported only then).
"""

from __future__ import annotations

from typing import Any

import gymnasium

ENV_ID = "CodeRefine-v0"

if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point="envs.code_refine:CodeRefineEnv")


def make_env(config: dict[str, Any] | None = None) -> gymnasium.Env:
    """`gymnasium.make(ENV_ID, **config)`: the creator Ray's registry calls."""
    return gymnasium.make(ENV_ID, **dict(config or {}))


def register_ray_env(name: str = ENV_ID) -> str:
    """Register CodeRefine with `ray.tune.registry.register_env` (RLlib's `env=name`)."""
    from ray.tune.registry import register_env

    register_env(name, make_env)
    return name
