"""Reward terms: a registry of named, weighted, span-placed callables and their presets."""

from envs.rewards.composite import PRESETS, CompositeReward, RewardResult, TermConfig
from envs.rewards.registry import (
    ENTRY_POINT_GROUP,
    SPANS,
    References,
    RewardContext,
    RewardTerm,
    available_terms,
    get_term,
    reward_term,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "PRESETS",
    "SPANS",
    "CompositeReward",
    "References",
    "RewardContext",
    "RewardResult",
    "RewardTerm",
    "TermConfig",
    "available_terms",
    "get_term",
    "reward_term",
]
