"""Next-token selection shared by engines that own their decoding loop.

The logprob reported for a token is log_softmax(logits / temperature) (temperature 1
when greedy), taken *before* top-k/top-p truncation: that is the quantity a learner
recomputes from a plain forward pass, so PPO ratios start at exactly 1.
"""

from __future__ import annotations

import hashlib

import torch

from actorlearner.engines.base import SamplingParams


def validate(sampling: SamplingParams) -> None:
    """Reject settings that would silently sample something other than what was asked."""
    if sampling.temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {sampling.temperature}")
    if not 0.0 < sampling.top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {sampling.top_p}")
    if sampling.top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 = off), got {sampling.top_k}")
    if sampling.max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {sampling.max_new_tokens}")


def _truncate(scaled: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Mask logits outside the top-k set and the top-p nucleus with -inf."""
    if top_k and top_k < scaled.shape[-1]:
        kth = torch.topk(scaled, top_k, dim=-1).values[..., -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(scaled, descending=True, dim=-1)
        probs = sorted_logits.softmax(-1)
        # drop a token once the mass before it already reaches top_p (the first always stays)
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        scaled = scaled.masked_fill(drop, float("-inf"))
    return scaled


def select(
    logits: torch.Tensor, sampling: SamplingParams, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick one token per row of `logits` [B, V]; return (ids [B], logprobs [B])."""
    logits = logits.float()
    greedy = sampling.temperature == 0
    scaled = logits if greedy else logits / sampling.temperature
    logp = torch.log_softmax(scaled, dim=-1)
    if greedy:
        ids = logits.argmax(dim=-1)
    else:
        probs = _truncate(scaled, sampling.top_k, sampling.top_p).softmax(-1)
        ids = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return ids, logp.gather(-1, ids[:, None]).squeeze(-1)


def mix_seed(*parts: int) -> int:
    """A stable 31-bit seed from several integers (the user's seed, the engine's, a row)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % (2**31 - 1)


def request_seeds(seed: int | None, engine_seed: int, n: int) -> list[int | None]:
    """Per-request seeds for an engine that seeds each request on its own (vLLM).

    One seed shared by every request would give identical samples for identical
    prompts (pass@10 = pass@1) and the same draws on every actor; mixing in the
    request's index and the engine's own seed keeps a seeded call reproducible while
    every sample differs. Without a seed, requests draw from the engine's generator.
    """
    if seed is None:
        return [None] * n
    return [mix_seed(seed, engine_seed, i) for i in range(n)]
