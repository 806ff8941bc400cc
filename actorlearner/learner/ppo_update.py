"""One PPO update on a rollout batch, top to bottom, over the `Backend` interface.

collate -> score (proximal and reference logprobs, values) -> rewards and advantages ->
epochs x mini-batches of clipped losses and optimizer steps -> KL controller, metrics.

Every rank receives the whole global batch and works on its share of each mini-batch
(the backend picks it); a loss is divided by the mini-batch's global token count over
the world size, so gradient averaging across ranks yields the global per-token mean.

Off-policy correction (`PPOConfig.off_policy`): the behaviour logprobs come from the
actors, which may hold older weights (async mode, weights that change between turns);
the proximal logprobs are the learner's own at the start of the update. `none` draws
the trust region around the behaviour logprobs (or the recomputed ones, with
`recompute_old_logprobs`), `decoupled` around the proximal ones with a clipped
behaviour weight, `tis` uses truncated importance weights instead of a clip range.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from actorlearner.learner import ppo
from actorlearner.learner.backend import Backend
from actorlearner.learner.batch import TokenBatch, collate, fresh_mask, group_ids, split_stale
from actorlearner.learner.config import PPOConfig
from actorlearner.learner.distributed import all_gather_objects, all_reduce_sum
from actorlearner.learner.policy import target_logprobs
from actorlearner.trajectory import Trajectory

METRICS = ("loss/policy", "loss/value", "clipfrac", "entropy", "approx_kl", "tokens")


@dataclass
class PPOState:
    """What an update changes besides the weights; checkpointed with them."""

    kl_ctl: ppo.FixedKLController
    generator: torch.Generator  # mini-batch shuffles
    version: int = 0  # PPO updates applied


def ppo_update(
    backend: Backend, trajectories: Sequence[Trajectory], cfg: PPOConfig, state: PPOState
) -> dict[str, float]:
    """Apply one PPO update (epochs x mini-batches of optimizer steps); return its metrics."""
    start = time.perf_counter()
    kept, dropped = split_stale(trajectories, state.version, cfg.max_staleness)
    if not kept:
        return {"staleness/dropped": float(dropped)}
    # 1. collate, and leave tokens older than the staleness bound out of the loss
    batch = collate(kept, backend.pad_id)
    mask = batch.action_mask
    train_mask = fresh_mask(batch, state.version, cfg.max_staleness)
    # 2. score with the weights before the update, and the reference
    need_proximal = cfg.advantage == "gae" or cfg.recompute_old_logprobs
    need_proximal = need_proximal or cfg.off_policy == "decoupled"
    proximal, values = score(backend, batch, cfg.temperature, policy=need_proximal)
    reference, _ = score(backend, batch, cfg.temperature, reference=True)
    behaviour = batch.old_logprobs
    anchor = proximal if cfg.recompute_old_logprobs or cfg.off_policy == "decoupled" else behaviour
    # 3. rewards with the KL penalty, advantages, returns
    rewards, kl = ppo.shaped_rewards(batch.rewards, anchor, reference, mask, state.kl_ctl.value)
    if cfg.advantage == "group":
        advantages, returns = ppo.group_advantages(rewards, mask, group_ids(kept), cfg.gamma)
    else:
        advantages, returns = ppo.gae(rewards, values, mask, cfg.gamma, cfg.lam)
    if cfg.whiten_advantages:
        advantages = ppo.masked_whiten(advantages, mask)
    fields = {
        "behaviour": behaviour,
        "anchor": anchor,
        "advantages": advantages,
        "values": values,
        "returns": returns,
        "mask": train_mask,
    }
    # 4. epochs x mini-batches: forward, clipped losses, backward, one optimizer step each
    sums = torch.zeros(len(METRICS), device=backend.device)
    grad_norms, lrs = [], []
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(kept), generator=state.generator).tolist()
        for rows in minibatches(perm, cfg.num_minibatches):
            normalizer = train_mask[rows].sum().clamp(min=1) / backend.world_size
            for micro in backend.forward(batch.input_ids, batch.attention_mask, rows):
                take = {k: micro.take(v) for k, v in fields.items()}
                loss, micro_sums = losses(micro.logits, micro.values, micro.ids, take, cfg)
                backend.backward(micro.weight * loss / normalizer.to(loss.device))
                sums += micro.weight * micro_sums
            grad_norm, lr = backend.step()
            grad_norms.append(grad_norm)
            lrs.append(lr)
    all_reduce_sum(sums)
    # 5. KL controller, version, metrics
    mean_kl = float(ppo.masked_mean(kl, mask))
    state.kl_ctl.update(mean_kl, len(kept))
    state.version += 1
    stale = staleness(batch, state.version - 1)
    return {
        "staleness/dropped": float(dropped),
        **{
            k: float(v / sums[-1].clamp(min=1))
            for k, v in zip(METRICS[:-1], sums[:-1], strict=True)
        },
        "kl": mean_kl,
        "kl_coef": state.kl_ctl.value,
        "value_error": float(ppo.masked_mean((values - returns) ** 2, mask)),
        "grad_norm": sum(grad_norms) / len(grad_norms),
        "lr": lrs[0],
        "tokens_per_s": float(batch.attention_mask.sum()) / (time.perf_counter() - start),
        "staleness/mean": sum(state.version - 1 - t.policy_version for t in kept) / len(kept),
        **stale,
        **behaviour_metrics(proximal, behaviour, mask, cfg, need_proximal),
        "policy_version": float(state.version),
        **reward_metrics(kept),
    }


def losses(
    logits: torch.Tensor,
    values: torch.Tensor | None,
    ids: torch.Tensor,
    take: dict[str, torch.Tensor],
    cfg: PPOConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One micro-batch's loss (summed over tokens; the caller normalises) and metric sums."""
    mask = take["mask"]
    logp = target_logprobs(logits, ids, cfg.temperature)
    pg, clipped = policy_loss(logp, take, cfg)
    assert values is not None
    vf = ppo.value_loss(
        values[:, :-1].float(), take["values"], take["returns"], mask, cfg.value_clip, 1.0
    )
    with torch.set_grad_enabled(cfg.entropy_coef > 0 and torch.is_grad_enabled()):
        entropy = ppo.masked_sum(ppo.entropy_from_logits(logits[:, :-1] / cfg.temperature), mask)
    vf_coef = 0.0 if cfg.advantage == "group" else cfg.vf_coef
    loss = pg.loss + vf_coef * vf.loss - cfg.entropy_coef * entropy
    approx_kl = ppo.masked_sum(take["anchor"] - logp.detach(), mask)
    parts = [pg.token_sum, vf.token_sum, clipped, entropy.detach(), approx_kl, mask.sum()]
    return loss, torch.stack(parts).float()


def policy_loss(
    logp: torch.Tensor, take: dict[str, torch.Tensor], cfg: PPOConfig
) -> tuple[ppo.LossTerms, torch.Tensor]:
    """The policy term the config's off-policy correction asks for (token sums)."""
    mask, adv = take["mask"], take["advantages"]
    if cfg.off_policy == "decoupled":
        return ppo.decoupled_policy_loss(
            logp, take["anchor"], take["behaviour"], adv, mask, cfg.clip_ratio, cfg.is_clip, 1.0
        )
    if cfg.off_policy == "tis":
        return ppo.tis_policy_loss(logp, take["behaviour"], adv, mask, cfg.is_clip, 1.0)
    return ppo.policy_loss(logp, take["anchor"], adv, mask, cfg.clip_ratio, 1.0)


@torch.no_grad()
def score(
    backend: Backend,
    batch: TokenBatch,
    temperature: float,
    policy: bool = True,
    reference: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Target logprobs and values [B, T-1] of the whole batch (each rank scores its share).

    With `policy` False nothing runs and both are zero (nothing downstream needs them).
    """
    logp, values = torch.zeros_like(batch.rewards), torch.zeros_like(batch.rewards)
    if not (policy or reference):
        return logp, values
    mine = []
    rows = range(len(batch))
    passes = backend.forward(
        batch.input_ids, batch.attention_mask, rows, train=False, reference=reference
    )
    for m in passes:
        if m.weight == 0.0:
            continue  # padding pass: kept the ZeRO-3 collectives in step
        lp = target_logprobs(m.logits, m.ids, temperature).cpu()
        v = m.values[:, :-1].float().cpu() if m.values is not None else torch.zeros_like(lp)
        mine.append((m.rows, lp, v))
    for part in all_gather_objects(mine):
        for rows_, lp, v in part:
            idx = torch.as_tensor(rows_)
            logp[idx, : lp.shape[1]], values[idx, : v.shape[1]] = lp, v
    mask = batch.action_mask
    return logp * mask, values * mask


def minibatches(perm: list[int], n: int) -> list[list[int]]:
    size = -(-len(perm) // n)
    return [perm[i : i + size] for i in range(0, len(perm), size)]


def staleness(batch: TokenBatch, version: int) -> dict[str, float]:
    """Per-token staleness against the version the update started from."""
    mask = batch.action_mask
    lag = (version - batch.versions).float()
    return {
        "staleness/token_mean": float(ppo.masked_mean(lag, mask)),
        "staleness/token_max": float((lag * mask).max()),
    }


def behaviour_metrics(
    proximal: torch.Tensor, behaviour: torch.Tensor, mask: torch.Tensor, cfg: PPOConfig, ok: bool
) -> dict[str, float]:
    """How far the behaviour policy was from the learner's weights (when those were scored)."""
    if not ok:
        return {}
    weights = torch.exp(proximal - behaviour)
    return {
        "off_policy/behaviour_weight_mean": float(ppo.masked_mean(weights, mask)),
        "off_policy/behaviour_clipped": float(
            ppo.masked_mean((weights > cfg.is_clip).float(), mask)
        ),
    }


def reward_metrics(kept: Sequence[Trajectory]) -> dict[str, float]:
    n = len(kept)
    out = {"reward/total": sum(t.total_reward for t in kept) / n}
    for k in sorted({k for t in kept for k in t.reward_terms}):
        out[f"reward/{k}"] = sum(t.reward_terms.get(k, 0.0) for t in kept) / n
    return out
