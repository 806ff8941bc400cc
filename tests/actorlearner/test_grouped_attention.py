"""Grouped decoding attention reads fewer columns and gives transformers' SDPA result."""

from __future__ import annotations

import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from actorlearner.engines import grouped_attention, hf
from actorlearner.engines.base import SamplingParams


def padded_batch(lengths: list[int], width: int, heads: int = 2, dim: int = 8):
    """One decoding step's query, keys, values and left-padding mask."""
    gen = torch.Generator().manual_seed(0)
    rows = len(lengths)
    query = torch.randn(rows, heads, 1, dim, generator=gen)
    key = torch.randn(rows, heads, width, dim, generator=gen)
    value = torch.randn(rows, heads, width, dim, generator=gen)
    mask = torch.zeros(rows, 1, 1, width, dtype=torch.bool)
    for i, n in enumerate(lengths):
        mask[i, :, :, width - n :] = True
    return query, key, value, mask


def test_groups_start_at_each_groups_first_real_token():
    lengths = [60, 58, 50, 41, 40, 33, 30, 30, 29, 20, 18, 12, 12, 9, 7, 5]  # longest first
    *_, mask = padded_batch(lengths, 64)
    groups = grouped_attention.groups(mask)
    assert [(a, b) for a, b, _ in groups] == [(0, 8), (8, 16)]
    assert [start for *_, start in groups] == [64 - 60, 64 - 29]
    assert grouped_attention.groups(mask) is groups  # once per step, not once per layer
    other = mask.clone()
    other[8:, :, :, 30:40] = True  # same shape, other rows: planned afresh
    assert grouped_attention.groups(other)[1][2] == 30


def test_grouped_attention_equals_sdpa_over_the_padded_batch():
    module = torch.nn.Module()
    module.is_causal = True
    lengths = [200, 180, 150, 120, 119, 90, 80, 70, 66, 50, 40, 33, 20, 10, 8, 3, 2, 1]
    query, key, value, mask = padded_batch(lengths, 200)
    full, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=0.35)
    grouped, _ = grouped_attention.grouped_sdpa(module, query, key, value, mask, scaling=0.35)
    assert grouped.shape == full.shape
    torch.testing.assert_close(grouped, full, rtol=1e-6, atol=1e-6)


def test_engine_replies_are_the_plain_sdpa_replies(tiny_model_dir, monkeypatch):
    """A batch big enough for several groups, prompts of very different lengths given
    in no order: the grouped engine's greedy tokens equal a plain-SDPA engine's, and
    every reply comes back at its prompt's index."""
    grouped = hf.HFEngine(str(tiny_model_dir), dtype="float32", device="cpu")
    assert grouped.model.config._attn_implementation == grouped_attention.NAME
    plain = hf.HFEngine(str(tiny_model_dir), dtype="float32", device="cpu")
    plain.model.set_attn_implementation("sdpa")
    gen = torch.Generator().manual_seed(3)
    sizes = [int(n) for n in torch.randint(2, 90, (24,), generator=gen)]
    prompts = [torch.randint(5, 200, (n,), generator=gen).tolist() for n in sizes]
    sampling = SamplingParams(max_new_tokens=16, temperature=0.0)
    planned = []
    real = grouped_attention.groups
    monkeypatch.setattr(grouped_attention, "groups", lambda m: planned.append(real(m)) or real(m))
    a = grouped.generate(prompts, sampling)
    assert planned and len(planned[0]) == 3  # 24 rows: three groups of eight
    assert planned[0][0][2] < planned[0][2][2]  # the shortest rows skip the most columns
    b = plain.generate(prompts, sampling)
    for x, y in zip(a, b, strict=True):
        assert x.token_ids == y.token_ids
        assert max(abs(p - q) for p, q in zip(x.logprobs, y.logprobs, strict=True)) < 1e-5
    # each reply belongs to its own prompt: a prompt alone gets the same reply
    alone = plain.generate([prompts[5]], sampling)[0]
    assert a[5].token_ids == alone.token_ids
