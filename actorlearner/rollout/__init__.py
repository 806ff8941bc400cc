"""Rollout side of the actor-learner loop: episodes in token space, Ray actors, weight sync.

Submodules load lazily, so reading a `RolloutConfig` does not import torch or Ray.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "RolloutConfig": "actorlearner.rollout.config",
    "EpisodeBuilder": "actorlearner.rollout.episode",
    "ReplyText": "actorlearner.rollout.episode",
    "EpisodeRunner": "actorlearner.rollout.runner",
    "RolloutWorker": "actorlearner.rollout.actor",
    "RolloutGroup": "actorlearner.rollout.group",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'actorlearner.rollout' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
