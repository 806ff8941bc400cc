"""HF engine against the real transformers model: exact greedy, stops, logprobs, weights."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from actorlearner.engines import make_engine
from actorlearner.engines.base import SamplingParams
from actorlearner.engines.hf import HFEngine
from actorlearner.models import check_model_path, load_model, stop_token_ids

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return HFEngine(str(tiny_model_dir))


@pytest.fixture(scope="module")
def prompts(engine):
    texts = ["def f(x):\n    return x", "The bug is", "import json\nclass Decoder:\n    def"]
    return [engine.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def forward_logprobs(model, prompt, reply, temperature=1.0):
    """log_softmax(logits / T) of each reply token under a plain, unpadded forward pass."""
    ids = torch.tensor([prompt + reply])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1].float()
    logp = torch.log_softmax(logits / temperature, dim=-1)
    return logp.gather(-1, torch.tensor(reply)[:, None]).squeeze(-1)


def test_greedy_matches_model_generate(engine, prompts):
    gens = engine.generate(prompts, SamplingParams(max_new_tokens=24, temperature=0))
    for prompt, gen in zip(prompts, gens, strict=True):
        ref = engine.model.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=24,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=engine.pad_id,
        )
        assert gen.token_ids == ref[0, len(prompt) :].tolist()
        assert gen.finish_reason == "length"
        lp = forward_logprobs(engine.model, prompt, gen.token_ids)
        torch.testing.assert_close(torch.tensor(gen.logprobs), lp, atol=1e-5, rtol=0)


def test_stop_tokens_end_rows_early_and_others_continue(engine, prompts):
    greedy = engine.generate(prompts, SamplingParams(max_new_tokens=24, temperature=0))
    stop = greedy[0].token_ids[5]  # a token row 0 emits at step 5 (or earlier)
    gens = engine.generate(
        prompts, SamplingParams(max_new_tokens=24, temperature=0, stop_token_ids=(stop,))
    )
    for full, gen in zip(greedy, gens, strict=True):
        if stop in full.token_ids:
            cut = full.token_ids.index(stop) + 1
            assert gen.token_ids == full.token_ids[:cut]
            assert gen.finish_reason == "stop"
        else:  # rows that never emit it are unaffected by the others leaving the batch
            assert gen.token_ids == full.token_ids
            assert gen.finish_reason == "length"
    assert gens[0].finish_reason == "stop" and len(gens[0].token_ids) <= 6


def test_pruning_finished_rows_changes_nothing(tiny_model_dir, engine, prompts):
    unpruned = HFEngine(model=engine.model, tokenizer=engine.tokenizer, prune_finished=False)
    stops = (
        engine.generate(prompts[:1], SamplingParams(max_new_tokens=3, temperature=0))[0].token_ids[
            2
        ],
    )
    sp = SamplingParams(max_new_tokens=20, temperature=0, stop_token_ids=stops)
    a, b = engine.generate(prompts, sp), unpruned.generate(prompts, sp)
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(
            torch.tensor(x.logprobs), torch.tensor(y.logprobs), atol=1e-5, rtol=0
        )


@pytest.mark.parametrize("top_k,top_p", [(0, 1.0), (20, 1.0), (0, 0.8)])
def test_sampled_logprobs_match_forward_with_temperature(engine, prompts, top_k, top_p):
    sp = SamplingParams(max_new_tokens=16, temperature=0.7, top_k=top_k, top_p=top_p, seed=3)
    gens = engine.generate(prompts, sp)
    for prompt, gen in zip(prompts, gens, strict=True):
        lp = forward_logprobs(engine.model, prompt, gen.token_ids, temperature=0.7)
        torch.testing.assert_close(torch.tensor(gen.logprobs), lp, atol=1e-5, rtol=0)
        if top_k:  # every sampled token is inside the top-k set at its step
            ids = torch.tensor([prompt + gen.token_ids])
            with torch.no_grad():
                logits = engine.model(ids).logits[0, len(prompt) - 1 : -1]
            kth = logits.topk(top_k, dim=-1).values[:, -1]
            chosen = logits.gather(-1, torch.tensor(gen.token_ids)[:, None]).squeeze(-1)
            assert bool((chosen >= kth).all())
    again = engine.generate(prompts, sp)
    assert [g.token_ids for g in again] == [g.token_ids for g in gens]  # seeded


def test_bad_sampling_and_prompts_are_rejected(engine, prompts):
    with pytest.raises(ValueError, match="top_p"):
        engine.generate(prompts, SamplingParams(top_p=0.0))
    with pytest.raises(ValueError, match="empty"):
        engine.generate([[]], SamplingParams())
    with pytest.raises(ValueError, match="positions"):
        engine.generate([[1] * 2040], SamplingParams(max_new_tokens=16))


def test_load_full_weights_changes_generation_and_records_version(tiny_model_dir, prompts):
    eng = HFEngine(str(tiny_model_dir))
    new, _ = load_model(tiny_model_dir)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in new.parameters():
            p.add_(0.05 * torch.randn_like(p))
    state = {f"module.{k}": v for k, v in new.state_dict().items()}  # DeepSpeed-style prefix
    state["v_head.weight"] = torch.zeros(1, 4)  # a learner's value head is ignored
    sp = SamplingParams(max_new_tokens=12, temperature=1.0, seed=0)
    before = eng.generate(prompts, sp)
    eng.load_weights(state, version=3)
    assert eng.version == 3
    after = eng.generate(prompts, sp)
    for prompt, gen in zip(prompts, after, strict=True):
        lp = forward_logprobs(new, prompt, gen.token_ids)
        torch.testing.assert_close(torch.tensor(gen.logprobs), lp, atol=1e-5, rtol=0)
    assert any(a.logprobs != b.logprobs for a, b in zip(before, after, strict=True))


def test_load_weights_rejects_unknown_keys_and_shapes(engine):
    with pytest.raises(ValueError, match="match no model parameter"):
        engine.load_weights({"nonsense.weight": torch.zeros(2)}, 1)
    with pytest.raises(ValueError, match="shape mismatch"):
        engine.load_weights({"lm_head.weight": torch.zeros(2, 2)}, 1)
    with pytest.raises(ValueError, match="LoRA"):
        engine.load_weights(
            {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(2)}, 1
        )


def test_load_lora_adapter_state(tiny_model_dir, prompts):
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

    lora = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "lora_dropout": 0.0}
    eng = HFEngine(str(tiny_model_dir), lora=lora)
    base, _ = load_model(tiny_model_dir)
    learner = get_peft_model(base, LoraConfig(task_type="CAUSAL_LM", **lora)).eval()
    torch.manual_seed(2)
    with torch.no_grad():
        for name, p in learner.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # a trained adapter: B != 0 changes the outputs
    state = get_peft_model_state_dict(learner)
    assert all(".lora_" in k for k in state)
    eng.load_weights(state, version=1)
    gen = eng.generate(prompts[:1], SamplingParams(max_new_tokens=10, temperature=1.0, seed=0))[0]
    lp = forward_logprobs(learner, prompts[0], gen.token_ids)
    torch.testing.assert_close(torch.tensor(gen.logprobs), lp, atol=1e-5, rtol=0)
    with learner.disable_adapter():  # and the adapter really matters
        assert not torch.allclose(forward_logprobs(learner, prompts[0], gen.token_ids), lp)


def test_missing_model_path_says_what_and_how(tmp_path):
    missing = tmp_path / "no_such_model"
    with pytest.raises(FileNotFoundError, match="no_such_model.*does not exist.*build_tiny_model"):
        load_model(missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        check_model_path(tmp_path / "empty")
    with pytest.raises(ValueError, match="unknown engine kind"):
        make_engine("tgi", str(missing))


def test_chat_template_and_stop_ids(engine):
    tok = engine.tokenizer
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    from actorlearner.chat import render

    assert tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False) == render(
        msgs, True
    )
    assert tok.convert_tokens_to_ids("<|im_end|>") in stop_token_ids(tok)


# ------------------------------------------------------------------- seeds


def test_request_seeds_differ_per_sample_and_per_engine_and_repeat():
    from actorlearner.engines.sampling import request_seeds

    ten = request_seeds(7, engine_seed=0, n=10)
    assert len(set(ten)) == 10  # ten samples of one prompt are ten draws (pass@10 != pass@1)
    assert request_seeds(7, engine_seed=0, n=10) == ten  # a seeded call is reproducible
    assert set(request_seeds(7, engine_seed=100_003, n=10)).isdisjoint(ten)  # another actor
    assert request_seeds(None, 0, 3) == [None, None, None]


def test_seeded_hf_engines_with_their_own_seeds_sample_differently(tiny_model_dir, prompts):
    sp = SamplingParams(max_new_tokens=12, temperature=1.0, seed=3)
    a, b = (HFEngine(str(tiny_model_dir), seed=s) for s in (11, 12))
    first = [g.token_ids for g in a.generate([prompts[0]] * 4, sp)]
    assert first == [g.token_ids for g in a.generate([prompts[0]] * 4, sp)]
    assert len({tuple(t) for t in first}) > 1  # rows of one call differ
    assert first != [g.token_ids for g in b.generate([prompts[0]] * 4, sp)]


# ------------------------------------------------------------------- vLLM contract (CPU part)


def test_vllm_weight_names_are_plain_transformers():
    from actorlearner.engines.vllm import engine_name, engine_state

    assert (
        engine_name("lm.model.layers.0.mlp.up_proj.weight") == "model.layers.0.mlp.up_proj.weight"
    )
    assert engine_name("module.lm.lm_head.weight") == "lm_head.weight"
    assert engine_name("model.layers.0.self_attn.q_proj.base_layer.weight") == (
        "model.layers.0.self_attn.q_proj.weight"
    )
    t = torch.zeros(1)
    assert set(engine_state({"lm.a.weight": t, "value_head.weight": t})) == {"a.weight"}
    with pytest.raises(ValueError, match="merge the LoRA adapter first"):
        engine_state({"a.lora_A.default.weight": t})


def test_vllm_buckets_keep_order_and_size(engine):
    from actorlearner.engines.vllm import buckets

    state = dict(engine.model.state_dict())
    plan = list(buckets(state, bucket_mb=0.05))
    assert [k for b in plan for k in b] == list(state)  # every tensor once, in order
    for b in plan:
        nbytes = sum(state[k].numel() * state[k].element_size() for k in b)
        assert nbytes <= 0.05 * 2**20 or len(b) == 1
    assert len(plan) > 2


# ------------------------------------------------------------------- vLLM on a GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs the gpu extra (vllm)")
def test_vllm_matches_hf_greedy_and_loads_weights(tiny_model_dir, prompts):
    """vLLM and the HF engine in the same dtype (float32) agree before and after an update,
    and the update changes vLLM's greedy output; seeded samples of one prompt differ."""
    vllm_engine = make_engine(
        "vllm", str(tiny_model_dir), dtype="float32", gpu_memory_utilization=0.3
    )
    hf = HFEngine(str(tiny_model_dir), device="cuda", dtype="float32")
    sp = SamplingParams(max_new_tokens=16, temperature=0)
    before = vllm_engine.generate(prompts, sp)
    assert [g.token_ids for g in before] == [g.token_ids for g in hf.generate(prompts, sp)]
    torch.manual_seed(0)
    state = {k: v + 0.05 * torch.randn_like(v) for k, v in hf.model.state_dict().items()}
    hf.load_weights(state, version=5)
    vllm_engine.load_weights({k: v.cpu() for k, v in state.items()}, version=5)
    got, want = vllm_engine.generate(prompts, sp), hf.generate(prompts, sp)
    assert vllm_engine.version == 5
    assert [g.token_ids for g in got] == [g.token_ids for g in want]
    assert [g.token_ids for g in got] != [g.token_ids for g in before]
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(
            torch.tensor(g.logprobs), torch.tensor(w.logprobs), atol=1e-3, rtol=0
        )
    seeded = SamplingParams(max_new_tokens=16, temperature=1.0, seed=1)
    samples = vllm_engine.generate([prompts[0]] * 10, seeded)
    assert len({tuple(g.token_ids) for g in samples}) > 1
