"""PPO math on token tensors: GAE, whitening, clipped losses, KL penalty and controllers.

All tensors are [batch, T] and aligned with next-token targets: column j describes the
action "emit token j+1", whose logprob and value come from the model's output at j.
`mask` is 1 on action (policy-generated) tokens only.

Multi-turn trajectories interleave actions with env feedback tokens. GAE skips the
non-action columns: the value of the next *action* token bootstraps the current one,
and gamma/lambda discount once per action token, so feedback tokens neither earn
rewards nor cost discount. Non-action columns get advantage and return 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def masked_sum(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum()


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over masked entries (unbiased variance); unmasked entries become 0."""
    n = mask.sum()
    mean = masked_sum(x, mask) / n
    var = masked_sum((x - mean) ** 2, mask) / (n - 1).clamp(min=1)
    return (x - mean) * torch.rsqrt(var + eps) * mask


@torch.no_grad()
def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over action columns only (see module docstring).

    The value after the last action is 0 (episodes end with the trajectory).
    Returns (advantages, returns), zero outside `mask`.
    """
    batch, length = rewards.shape
    next_value = torch.zeros(batch, dtype=values.dtype, device=values.device)
    next_adv = torch.zeros_like(next_value)
    advantages = torch.zeros_like(values)
    for t in reversed(range(length)):
        is_action = mask[:, t].bool()
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv = delta + gamma * lam * next_adv
        advantages[:, t] = torch.where(is_action, adv, torch.zeros_like(adv))
        next_value = torch.where(is_action, values[:, t], next_value)
        next_adv = torch.where(is_action, adv, next_adv)
    returns = (advantages + values) * mask
    return advantages, returns


def turn_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the action run (the turn's reply) each column belongs to; -1 off the mask."""
    m = mask.bool()
    starts = m & ~torch.nn.functional.pad(m[:, :-1], (1, 0))
    return torch.where(m, starts.long().cumsum(1) - 1, torch.full_like(m, -1, dtype=torch.long))


def _leave_one_out(values: torch.Tensor, valid: torch.Tensor, peers: torch.Tensor) -> torch.Tensor:
    """Mean of `values` over the valid other rows marked in `peers` [B, B]; NaN where none."""
    weights = peers * valid[None, :]
    count = weights.sum(1)
    return torch.where(count > 0, weights @ values / count.clamp(min=1), torch.nan)


@torch.no_grad()
def group_advantages(
    rewards: torch.Tensor, mask: torch.Tensor, groups: list[int], gamma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Critic-free advantages with a per-problem, per-turn baseline (RLOO-style).

    Every action token gets its return-to-go (discounted once per action token, as in
    `gae`) minus the mean return, from the start of the same turn, of the *other*
    episodes of its group (the other samples from the same start) that reached that turn.
    Aligning by turn matters: a second-turn token's return leaves out the first turn's
    rewards, so comparing it with whole-episode returns would add an offset that says
    nothing about its own actions. The baseline never depends on the row's own actions,
    so the estimate stays unbiased. Where no group mate reached the turn (or the row is
    alone), the other rows of the batch that did stand in; failing those, the baseline
    is 0. Returns (advantages, returns-to-go), zero outside `mask`.
    """
    if len(groups) != rewards.shape[0]:
        raise ValueError(f"{len(groups)} group ids for {rewards.shape[0]} rows")
    returns, _ = gae(rewards, torch.zeros_like(rewards), mask, gamma, 1.0)
    turn = turn_index(mask)
    turns = int(turn.max().item()) + 1 if mask.any() else 0
    ids = torch.as_tensor(groups, device=rewards.device)
    others = 1.0 - torch.eye(len(groups), dtype=returns.dtype, device=returns.device)
    mates = (ids[:, None] == ids[None, :]).to(returns.dtype) * others
    baseline = torch.zeros_like(returns)
    for k in range(turns):
        in_turn = turn == k
        reached = in_turn.any(1)
        first = in_turn.float().argmax(1)  # first column of turn k (0 where not reached)
        start_return = returns.gather(1, first[:, None]).squeeze(1)
        valid = reached.to(returns.dtype)
        b = _leave_one_out(start_return, valid, mates)
        b = torch.where(b.isnan(), _leave_one_out(start_return, valid, others), b)
        b = torch.nan_to_num(b, nan=0.0)
        baseline = torch.where(in_turn, b[:, None], baseline)
    return (returns - baseline) * mask, returns


def kl_per_token(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Sampled estimate of KL(policy || ref) per token: log p(a) - log p_ref(a)."""
    return logprobs - ref_logprobs


def shaped_rewards(
    env_rewards: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Env rewards plus -kl_coef * KL on every action token. Returns (rewards, kl)."""
    kl = kl_per_token(logprobs, ref_logprobs) * mask
    return env_rewards - kl_coef * kl, kl


@dataclass
class LossTerms:
    loss: torch.Tensor  # differentiable, already divided by `normalizer`
    token_sum: torch.Tensor  # sum of per-token losses over mask (for logging)


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_ratio: float,
    normalizer: float | torch.Tensor,
) -> tuple[LossTerms, torch.Tensor]:
    """Clipped surrogate: max(-A r, -A clip(r, 1-eps, 1+eps)) per token.

    `normalizer` is the number of action tokens the loss is averaged over; passing the
    global count (divided by world size) makes data-parallel ranks sum to the global mean.
    Returns the loss terms and the number of clipped tokens.
    """
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_ratio, 1.0 + clip_ratio)
    per_token = torch.maximum(unclipped, clipped)
    clipped_count = masked_sum((clipped > unclipped).float(), mask).detach()
    terms = LossTerms(
        masked_sum(per_token, mask) / normalizer, masked_sum(per_token, mask).detach()
    )
    return terms, clipped_count


OFF_POLICY = ("none", "decoupled", "tis")


def behaviour_weights(
    proximal: torch.Tensor, behaviour: torch.Tensor, mask: torch.Tensor, cap: float
) -> torch.Tensor:
    """Decoupled PPO's per-token importance weight pi_prox / pi_behav, clipped at `cap`.

    It corrects for the gap between the (possibly stale) policy that sampled a token and
    the proximal policy the trust region is drawn around; clipping bounds the variance a
    very stale token can add. 1 off the mask. Never differentiated.
    """
    weights = torch.clamp(torch.exp(proximal - behaviour), max=cap)
    return torch.where(mask.bool(), weights, torch.ones_like(weights)).detach()


def decoupled_policy_loss(
    logprobs: torch.Tensor,
    proximal: torch.Tensor,
    behaviour: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_ratio: float,
    cap: float,
    normalizer: float | torch.Tensor,
) -> tuple[LossTerms, torch.Tensor]:
    """Decoupled PPO (Hilton et al. 2022; AReaL): w * max(-A r, -A clip(r, 1-eps, 1+eps)),
    r = pi / pi_prox, w = min(pi_prox / pi_behav, cap). Returns the loss terms and the
    number of clipped tokens."""
    weights = behaviour_weights(proximal, behaviour, mask, cap)
    ratio = torch.exp(logprobs - proximal)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_ratio, 1.0 + clip_ratio)
    per_token = weights * torch.maximum(unclipped, clipped)
    clipped_count = masked_sum((clipped > unclipped).float(), mask).detach()
    total = masked_sum(per_token, mask)
    return LossTerms(total / normalizer, total.detach()), clipped_count


def tis_policy_loss(
    logprobs: torch.Tensor,
    behaviour: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cap: float,
    normalizer: float | torch.Tensor,
) -> tuple[LossTerms, torch.Tensor]:
    """Truncated importance sampling (IMPALA's policy gradient): per token
    -min(pi / pi_behav, cap) * A * grad log pi, with the weight held constant.

    No proximal policy and no clip range: the truncation alone bounds the step. The
    loss value per token is -A * min(rho, cap). Returns the loss terms and the number of
    truncated tokens.
    """
    detached = logprobs.detach()
    rho = torch.exp(detached - behaviour)
    weights = torch.clamp(rho, max=cap)
    per_token = -advantages * weights * torch.exp(logprobs - detached)
    truncated = masked_sum((rho > cap).float(), mask).detach()
    total = masked_sum(per_token, mask)
    return LossTerms(total / normalizer, total.detach()), truncated


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    value_clip: float,
    normalizer: float | torch.Tensor,
) -> LossTerms:
    """0.5 * max((V - R)^2, (V_clipped - R)^2), V_clipped within value_clip of the old value."""
    clipped = old_values + torch.clamp(values - old_values, -value_clip, value_clip)
    per_token = 0.5 * torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)
    return LossTerms(masked_sum(per_token, mask) / normalizer, masked_sum(per_token, mask).detach())


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution at every position, [..., V] -> [...]."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


class FixedKLController:
    """Constant KL coefficient."""

    def __init__(self, kl_coef: float):
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        del current_kl, n_steps

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


class AdaptiveKLController(FixedKLController):
    """Proportional controller (Ziegler et al. 2019): moves beta so the KL tracks a target.

    beta <- beta * (1 + clip(kl / target - 1, -0.2, 0.2) * n_steps / horizon)
    """

    def __init__(self, kl_coef: float, target: float, horizon: int):
        super().__init__(kl_coef)
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon


def make_kl_controller(
    kl_coef: float, target: float | None, horizon: int
) -> FixedKLController | AdaptiveKLController:
    if target is None:
        return FixedKLController(kl_coef)
    if target <= 0:
        raise ValueError(f"kl_target must be positive (got {target}); use None for a fixed beta")
    return AdaptiveKLController(kl_coef, target, horizon)
