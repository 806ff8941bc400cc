"""Rollout side of the actor-learner loop: episodes in token space, Ray actors, weight sync."""

from actorlearner.rollout.config import RolloutConfig
from actorlearner.rollout.episode import EpisodeBuilder, ReplyText
from actorlearner.rollout.runner import EpisodeRunner

__all__ = [
    "EpisodeBuilder",
    "EpisodeRunner",
    "ReplyText",
    "RolloutConfig",
    "RolloutGroup",
    "RolloutWorker",
]


def __getattr__(name: str):
    """Import the Ray pieces lazily (the runner works without Ray)."""
    if name == "RolloutGroup":
        from actorlearner.rollout.group import RolloutGroup

        return RolloutGroup
    if name == "RolloutWorker":
        from actorlearner.rollout.actor import RolloutWorker

        return RolloutWorker
    raise AttributeError(name)
