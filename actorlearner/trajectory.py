"""What rollout actors hand the learner: one multi-turn episode in token space.

Index convention: position i holds token_ids[i]; logprobs[i] = log p(token_ids[i] | ids[:i])
for generated tokens (0 elsewhere); action_mask[i] = 1 only on policy-generated
tokens (never on prompts or env feedback); rewards[i] is the env reward placed on
token i (explanation reward at the explanation's last token, code reward at the
code's last token, turn rewards at the turn's last generated token); versions[i] is the
policy version whose weights sampled token i.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Trajectory:
    token_ids: list[int]
    logprobs: list[float]
    action_mask: list[int]
    rewards: list[float]
    turn_ends: list[int] = field(default_factory=list)  # index of each turn's last generated token
    reward_terms: dict[str, float] = field(default_factory=dict)  # per-term sums over the episode
    policy_version: int = 0
    task_id: str = ""
    stats: dict = field(default_factory=dict)  # turns, solved, pass_rate, lengths, timings
    # policy version that sampled each token (weights can change between turns); empty ->
    # every token from `policy_version`. `policy_version` is the oldest action token's.
    versions: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.token_ids)
        if not self.versions:
            self.versions = [self.policy_version] * n
        lengths = (len(self.logprobs), len(self.action_mask), len(self.rewards), len(self.versions))
        if lengths != (n,) * 4:
            raise ValueError(
                f"trajectory fields differ in length: ids={n} logprobs={len(self.logprobs)} "
                f"mask={len(self.action_mask)} rewards={len(self.rewards)} "
                f"versions={len(self.versions)}"
            )

    @property
    def total_reward(self) -> float:
        return float(sum(self.rewards))

    @property
    def sampled_versions(self) -> list[int]:
        return sampled_versions(self.versions, self.action_mask)


def sampled_versions(versions: list[int], action_mask: list[int]) -> list[int]:
    """The policy versions that sampled an episode's generated tokens, oldest first."""
    return sorted({v for v, a in zip(versions, action_mask, strict=True) if a})
