"""Reward terms: a registry of named, weighted, span-placed callables and their presets.

Add a term in five minutes: write ``fn(ctx: RewardContext, **options) -> float``,
register it, and name it in the env's `rewards` list::

    from envs.rewards import RewardContext, reward_term

    @reward_term("short_explanation", span="explanation")
    def short_explanation(ctx: RewardContext, max_words: int = 30) -> float:
        '''1 for an explanation of at most `max_words` words, falling linearly to 0 at 2x.'''
        words = len(ctx.reply.explanation.split())
        return max(0.0, min(1.0, 2.0 - words / max_words))

    env = gym.make("CodeRefine-v0", rewards=[
        {"name": "pass_rate", "weight": 1.0},
        {"name": "short_explanation", "weight": 0.5, "options": {"max_words": 5}},
    ])

`ctx` holds the problem, the parsed reply (explanation, code, spans), the sandbox
verdict (None when the reply had no code), the turn index, the references (verified
fixes and explanations) and the previous verdict. Packages can ship terms through the
entry-point group ``actorlearner.reward_terms`` instead of importing them.

In a run config, name the term's module in ``imports`` (imported in the driver and in
every Ray worker) and the term in ``train.rewards``::

    imports: [my_terms]
    train:
      rewards: [{name: pass_rate, weight: 1.0}, {name: short_explanation, weight: 0.5}]
"""

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
