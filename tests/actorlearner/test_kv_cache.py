"""The HF engine's in-place KV cache gives exactly what transformers' DynamicCache gives."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from actorlearner.engines import hf
from actorlearner.engines.base import SamplingParams


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_growing_cache_is_bit_identical_to_dynamic_cache(tiny_model_dir, monkeypatch, temperature):
    """Prompts of different lengths (left padding), rows stopping at different steps
    (pruning), and a reserve smaller than the reply (the buffer grows mid-decode)."""
    engine = hf.HFEngine(str(tiny_model_dir), dtype="float32", device="cpu")
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(5, 200, (n,), generator=gen).tolist() for n in (3, 17, 40, 9)]
    sampling = SamplingParams(max_new_tokens=24, temperature=temperature, seed=7)
    free = engine.generate(prompts, sampling)
    # stop tokens that these rows do emit, at different steps
    stops = (free[0].token_ids[4], free[2].token_ids[12])
    sampling = SamplingParams(
        max_new_tokens=24, temperature=temperature, seed=7, stop_token_ids=stops
    )
    new = engine.generate(prompts, sampling)
    small = hf.growing_cache
    monkeypatch.setattr(hf, "growing_cache", lambda config, reserve: small(config, 2))
    grown = engine.generate(prompts, sampling)
    monkeypatch.setattr(hf, "growing_cache", lambda config, reserve: DynamicCache(config=config))
    old = engine.generate(prompts, sampling)
    for a, b, c in zip(new, grown, old, strict=True):
        assert a.token_ids == b.token_ids == c.token_ids
        assert a.logprobs == b.logprobs == c.logprobs  # exact, not approximately
        assert a.finish_reason == b.finish_reason == c.finish_reason
    assert len({len(g.token_ids) for g in old}) > 1  # rows left the batch at different steps
