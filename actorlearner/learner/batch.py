"""Trajectories -> padded, target-aligned tensors; staleness filtering; rank sharding."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from actorlearner.trajectory import Trajectory


@dataclass
class TokenBatch:
    """Right-padded sequences; every [B, T-1] field is aligned with targets input_ids[:, 1:]."""

    input_ids: torch.Tensor  # [B, T] long
    attention_mask: torch.Tensor  # [B, T] long
    action_mask: torch.Tensor  # [B, T-1] float: 1 where the target token is an action
    rewards: torch.Tensor  # [B, T-1] float env rewards on target tokens
    old_logprobs: torch.Tensor  # [B, T-1] float behaviour logprobs on target tokens
    versions: torch.Tensor  # [B, T-1] long: policy version that sampled each target token

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def split_stale(
    trajectories: Sequence[Trajectory], current_version: int, max_staleness: int
) -> tuple[list[Trajectory], int]:
    """Keep trajectories with an action token from a version >= current - max_staleness
    (older tokens of a kept one are masked out of the loss, see `fresh_mask`); count the rest.
    """
    oldest = current_version - max_staleness
    kept = [t for t in trajectories if any(_fresh_actions(t, oldest))]
    return kept, len(trajectories) - len(kept)


def _fresh_actions(traj: Trajectory, oldest: int) -> list[bool]:
    return [bool(a) and v >= oldest for a, v in zip(traj.action_mask, traj.versions, strict=True)]


def fresh_mask(batch: TokenBatch, current_version: int, max_staleness: int) -> torch.Tensor:
    """The action mask without tokens sampled by versions older than the staleness bound."""
    return batch.action_mask * (batch.versions >= current_version - max_staleness)


def _rewards_on_actions(traj: Trajectory) -> list[float]:
    """Move any reward placed on a non-action token onto the closest earlier action token.

    The contract puts rewards on generated tokens already; this keeps a reward that
    lands on a feedback or stop token from silently disappearing from GAE.
    """
    rewards = [0.0] * len(traj.token_ids)
    last_action = -1
    for i, (r, a) in enumerate(zip(traj.rewards, traj.action_mask, strict=True)):
        if a:
            last_action = i
        if r == 0.0:
            continue
        if last_action < 0:
            raise ValueError(
                f"trajectory {traj.task_id!r}: reward {r} at token {i} precedes every action token"
            )
        rewards[i if a else last_action] += r
    return rewards


def validate(traj: Trajectory) -> None:
    if len(traj.token_ids) < 2:
        raise ValueError(f"trajectory {traj.task_id!r} has fewer than 2 tokens")
    if traj.action_mask and traj.action_mask[0]:
        raise ValueError(
            f"trajectory {traj.task_id!r}: token 0 is marked as an action; the first token "
            "must be prompt (there is no context to generate it from)"
        )
    if not any(traj.action_mask):
        raise ValueError(f"trajectory {traj.task_id!r} has no action tokens")


def collate(trajectories: Sequence[Trajectory], pad_id: int) -> TokenBatch:
    """Pad to the longest trajectory and shift the per-token fields onto targets."""
    for t in trajectories:
        validate(t)
    length = max(len(t.token_ids) for t in trajectories)
    b = len(trajectories)
    input_ids = torch.full((b, length), pad_id, dtype=torch.long)
    attention = torch.zeros((b, length), dtype=torch.long)
    action = torch.zeros((b, length - 1))
    rewards = torch.zeros((b, length - 1))
    logprobs = torch.zeros((b, length - 1))
    versions = torch.zeros((b, length - 1), dtype=torch.long)
    for i, t in enumerate(trajectories):
        n = len(t.token_ids)
        input_ids[i, :n] = torch.tensor(t.token_ids)
        attention[i, :n] = 1
        action[i, : n - 1] = torch.tensor(t.action_mask[1:], dtype=torch.float)
        rewards[i, : n - 1] = torch.tensor(_rewards_on_actions(t)[1:])
        logprobs[i, : n - 1] = torch.tensor(t.logprobs[1:])
        versions[i, : n - 1] = torch.tensor(t.versions[1:])
    return TokenBatch(input_ids, attention, action, rewards, logprobs * action, versions)


def rank_share(indices: Sequence[int], rank: int, world_size: int) -> list[int]:
    """This rank's part of a global list of sample indices (strided, so sizes differ by <=1)."""
    return list(indices)[rank::world_size]


def chunks(items: Sequence[int], size: int) -> list[list[int]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def group_ids(trajectories: Sequence[Trajectory]) -> list[int]:
    """Integer group of each trajectory from `stats["group"]`; ungrouped ones stand alone."""
    index: dict[object, int] = {}
    out = []
    for i, t in enumerate(trajectories):
        key = t.stats.get("group", ("alone", i))
        out.append(index.setdefault(key, len(index)))
    return out
