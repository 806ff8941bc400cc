"""The HF engine's in-place KV cache and CPU decoding attention give what transformers'
DynamicCache and SDPA give."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import DynamicCache

from actorlearner.engines import hf
from actorlearner.engines.base import SamplingParams


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_growing_cache_gives_what_dynamic_cache_gives(tiny_model_dir, monkeypatch, temperature):
    """Prompts of different lengths (left padding), rows stopping at different steps
    (pruning), and a reserve smaller than the reply (the buffer grows mid-decode): the
    same tokens and, to float rounding, logprobs as transformers' `DynamicCache` (values
    in the usual layout). The decoding products sum in an order that depends on the
    buffer's layout, so equal is not bit-equal here."""
    engine = hf.HFEngine(str(tiny_model_dir), dtype="float32", device="cpu")
    assert engine.values_transposed  # CPU: decode_attention over transposed values
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
    monkeypatch.setattr(hf, "growing_cache", lambda config, reserve, **kw: small(config, 2, **kw))
    grown = engine.generate(prompts, sampling)
    monkeypatch.setattr(hf, "growing_cache", lambda config, *a, **kw: DynamicCache(config=config))
    old = engine.generate(prompts, sampling)
    for a, b, c in zip(new, grown, old, strict=True):
        assert a.token_ids == b.token_ids == c.token_ids
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)
        assert a.logprobs == pytest.approx(c.logprobs, abs=1e-5)
        assert a.finish_reason == b.finish_reason == c.finish_reason
    assert len({len(g.token_ids) for g in old}) > 1  # rows left the batch at different steps


def test_decode_attention_matches_sdpa_with_grouped_heads_and_padding():
    """A random Qwen2 with 4 query heads per KV head, left-padded rows of different
    lengths: the engine's CPU decoding (transposed values, decode_attention) gives the
    greedy tokens of transformers' own `generate` (SDPA, its cache), and the logprobs
    that one SDPA forward over prompt + reply gives."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from actorlearner.engines.decode_attention import NAME

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=8, num_key_value_heads=2, attn_implementation="sdpa",
    )  # fmt: skip
    reference = Qwen2ForCausalLM(config).eval()
    model = Qwen2ForCausalLM(copy.deepcopy(config)).eval()  # its own config to switch
    model.load_state_dict(reference.state_dict())
    engine = hf.HFEngine(model=model)
    assert engine.values_transposed and model.config._attn_implementation == NAME
    assert reference.config._attn_implementation == "sdpa"
    gen = torch.Generator().manual_seed(4)
    prompts = [torch.randint(5, 290, (n,), generator=gen).tolist() for n in (30, 5, 18)]
    ours = engine.generate(prompts, SamplingParams(max_new_tokens=16, temperature=0.0))
    with torch.no_grad():
        for p, g in zip(prompts, ours, strict=True):
            ids = reference.generate(
                torch.tensor([p]), max_new_tokens=16, do_sample=False, pad_token_id=0
            )
            assert g.token_ids == ids[0, len(p) :].tolist()
            logits = reference(torch.tensor([p + g.token_ids])).logits[0, len(p) - 1 : -1]
            logps = torch.log_softmax(logits.float(), -1)
            expected = logps.gather(-1, torch.tensor(g.token_ids)[:, None])[:, 0].tolist()
            assert g.logprobs == pytest.approx(expected, abs=1e-4)


def test_decode_attention_is_left_alone_where_it_does_not_apply():
    """Eager attention (a user's choice, e.g. for softcapping models) keeps its own path
    and the usual value layout."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, attn_implementation="eager",
    )  # fmt: skip
    model = Qwen2ForCausalLM(config).eval()
    engine = hf.HFEngine(model=model)
    assert not engine.values_transposed and model.config._attn_implementation == "eager"
    out = engine.generate([[5, 6, 7]], SamplingParams(max_new_tokens=4, temperature=0.0))
    assert len(out[0].token_ids) == 4


def _fresh_and_reusing(model_dir, monkeypatch):
    """An engine that prefills every prompt whole, one that reuses stored states, and the
    columns each of the latter's calls took from the store (0: none)."""
    fresh = hf.HFEngine(str(model_dir), dtype="float32", device="cpu")
    reuse = hf.HFEngine(str(model_dir), dtype="float32", device="cpu", reuse_prefixes=True)
    reused_columns: list[int] = []
    real = hf.cached_prefill

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        reused_columns.append(out[1] if out else 0)
        return out

    monkeypatch.setattr(hf, "cached_prefill", spy)
    return fresh, reuse, reused_columns


def test_reused_prefixes_give_the_replies_of_a_full_prefill(tiny_model_dir, monkeypatch):
    """Three turns of four episodes (prompt + reply + feedback, feedback of different
    lengths, one episode replaced by a fresh one): an engine that reuses the earlier
    turns' states generates what one that prefills every turn generates."""
    fresh, reuse, reused_columns = _fresh_and_reusing(tiny_model_dir, monkeypatch)
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(5, 200, (n,), generator=gen).tolist() for n in (3, 17, 40, 9)]
    free = fresh.generate(prompts, SamplingParams(max_new_tokens=20, temperature=0.0))
    sampling = SamplingParams(
        max_new_tokens=20, temperature=0.0, stop_token_ids=(free[1].token_ids[6],)
    )
    for turn in range(3):
        a, b = fresh.generate(prompts, sampling), reuse.generate(prompts, sampling)
        for x, y in zip(a, b, strict=True):
            assert x.token_ids == y.token_ids and x.finish_reason == y.finish_reason
            assert x.logprobs == pytest.approx(y.logprobs, abs=1e-4)
        if turn == 0:
            assert len(reuse.prefixes.entries) == 4  # type: ignore[union-attr]
        feedback = [torch.randint(5, 200, (n,), generator=gen).tolist() for n in (5, 1, 12, 30)]
        prompts = [p + g.token_ids + f for p, g, f in zip(prompts, a, feedback, strict=True)]
        prompts[2] = torch.randint(5, 200, (25,), generator=gen).tolist()  # a new episode
    assert reuse.prefixes is not None and reuse.prefixes.calls == 3
    assert reused_columns[0] == 0 and min(reused_columns[1:]) > 0, reused_columns
    reuse.load_weights({}, version=1)
    assert not reuse.prefixes.entries  # states of old weights are dropped


def test_length_buckets_return_rows_in_order_and_only_for_greedy(tiny_model_dir):
    from actorlearner.engines.buckets import LengthBuckets

    engine = hf.HFEngine(str(tiny_model_dir), dtype="float32", device="cpu")
    gen = torch.Generator().manual_seed(2)
    prompts = [torch.randint(5, 200, (n,), generator=gen).tolist() for n in (30, 3, 17, 9, 41)]
    greedy = SamplingParams(max_new_tokens=10, temperature=0.0)
    calls = []
    real = engine.generate

    def spy(batch, sampling):
        calls.append(sorted(len(p) for p in batch))
        return real(batch, sampling)

    engine.generate = spy  # type: ignore[method-assign]
    bucketed = LengthBuckets(engine, n=2, min_rows=4)
    got = bucketed.generate(prompts, greedy)
    assert calls == [[3, 9, 17], [30, 41]]  # shortest first, then the rest
    assert [g.token_ids for g in got] == [g.token_ids for g in real(prompts, greedy)]
    calls.clear()
    bucketed.generate(prompts, SamplingParams(max_new_tokens=4, temperature=0.8, seed=1))
    assert len(calls) == 1 and bucketed.version == engine.version


@pytest.mark.parametrize("transposed", [False, True])
def test_finished_rows_leave_by_moving_only_the_rows_past_the_new_size(transposed):
    from actorlearner.engines.kv_cache import GrowingLayer, compact_order

    alive = torch.tensor([True, False, True, False, True, True, False, True])
    order = compact_order(alive)
    assert order.tolist() == [0, 5, 2, 7, 4]  # live rows 0, 2, 4 stay; 5 and 7 fill holes
    layer = GrowingLayer(reserve=3, transposed_values=transposed)
    keys, values = torch.randn(8, 2, 5, 4), torch.randn(8, 2, 5, 4)
    layer.update(keys, values)
    assert (layer.values.stride(-1) != 1) == transposed  # [head_dim, positions] in memory
    buffer = layer._k.data_ptr()
    layer.batch_select_indices(order)
    assert torch.equal(layer.keys, keys[order]) and torch.equal(layer.values, values[order])
    assert layer._k.data_ptr() == buffer  # in place: no copy of the whole cache
    layer.update(torch.ones(5, 2, 1, 4), torch.ones(5, 2, 1, 4))  # decoding goes on
    assert torch.equal(layer.keys[:, :, :5], keys[order]) and layer.keys.shape == (5, 2, 6, 4)
    layer.batch_select_indices(torch.tensor([3, 0]))  # any other order: gathered
    assert torch.equal(layer.keys[:, :, :5], keys[order][[3, 0]])
    assert torch.equal(layer.values[:, :, :5], values[order][[3, 0]])


def test_new_episodes_prefill_their_common_start_once(tiny_model_dir, monkeypatch):
    """Two calls of new episodes that start with the same 20 tokens (a system prompt):
    the start is prefilled once, kept, and every row of both calls prefills only what
    follows it; the replies are those of an engine that prefills every prompt whole."""
    fresh, reuse, reused_columns = _fresh_and_reusing(tiny_model_dir, monkeypatch)
    gen = torch.Generator().manual_seed(3)
    start = torch.randint(5, 200, (20,), generator=gen).tolist()
    greedy = SamplingParams(max_new_tokens=12, temperature=0.0)
    for tails in ((4, 9, 15), (7, 2)):
        prompts = [start + torch.randint(5, 200, (n,), generator=gen).tolist() for n in tails]
        for x, y in zip(
            fresh.generate(prompts, greedy), reuse.generate(prompts, greedy), strict=True
        ):
            assert x.token_ids == y.token_ids
            assert x.logprobs == pytest.approx(y.logprobs, abs=1e-4)
    assert reuse.prefixes is not None and list(reuse.prefixes.shared) == [tuple(start)]
    assert reused_columns == [20, 20]  # widest row: its tail only; both calls
    short = [start[:5] + [7], start[:5] + [9]]  # a common start under MIN_SHARED_START
    reuse.generate(short, greedy)
    assert len(reuse.prefixes.shared) == 1
