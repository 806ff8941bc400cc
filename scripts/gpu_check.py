"""What a GPU machine must confirm before a recipe runs there: `python scripts/gpu_check.py`.

Needs torch with CUDA, transformers and PEFT; DeepSpeed for the learner checks (skipped,
and reported, without it); no Ray, no vLLM. About 5 minutes on one H200:

1. HF engine on CUDA in fp32 and bf16: batched left-padded greedy equals per-prompt
   greedy (bf16: up to a near tie), and its logprobs match a plain forward pass;
2. DeepSpeed on NCCL at world size 1 with ZeRO-2, ZeRO-3 and LoRA: one PPO step each,
   and the exported weights in the CUDA HF engine give the policy's own greedy tokens;
3. a random-init full-size Qwen2.5-Coder-1.5B in bf16 (ZeRO-2): two PPO steps on
   ~1k-token trajectories, with peak memory, step time and export time.

`--device cpu --quick` runs parts 1 and 2 on the CPU (gloo) with the tiny model: CI's share.
The last line printed contains `gpu check ok`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

NEAR_TIE = 0.05  # bf16: greedy paths may part where the top two logprobs are this close


def report(name: str, **values: Any) -> None:
    print(json.dumps({"check": name, **values}), flush=True)


# ----------------------------------------------------------------------- HF engine
def _gap(model: Any, ids: list[int], device: str) -> float:
    """Top-1 minus top-2 logprob of the next token after `ids` under a plain forward."""
    with torch.no_grad():
        logits = model(torch.tensor([ids], device=device)).logits[0, -1].float()
    top = torch.log_softmax(logits, -1).topk(2).values
    return float(top[0] - top[1])


def same_greedy(
    model: Any, prompt: list[int], a: list[int], b: list[int], device: str, exact: bool
) -> bool:
    """Equal tokens, or (not exact) equal up to a step where the model's top two are a near tie."""
    if a == b:
        return True
    if exact:
        return False
    k = next(i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)
    return _gap(model, prompt + a[:k], device) < NEAR_TIE


def check_hf_engine(model_dir: str, device: str, dtype: str) -> None:
    from actorlearner.engines.base import SamplingParams
    from actorlearner.engines.hf import HFEngine

    engine = HFEngine(model_dir, device=device, dtype=dtype)
    texts = [
        "def add(a, b):\n    return",
        "The bug is",
        "import json\n\nclass Decoder:\n    def f(self):",
    ]
    prompts = [engine.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    sp = SamplingParams(max_new_tokens=24, temperature=0.0)
    batched = engine.generate(prompts, sp)
    exact = dtype == "float32"
    for p, g in zip(prompts, batched, strict=True):
        alone = engine.generate([p], sp)[0]
        if not same_greedy(engine.model, p, g.token_ids, alone.token_ids, device, exact):
            raise AssertionError(
                f"{dtype}: batched greedy {g.token_ids} != alone {alone.token_ids}"
            )
    worst = max(
        _logprob_error(engine.model, p, g.token_ids, g.logprobs, device)
        for p, g in zip(prompts, batched, strict=True)
    )
    limit = 1e-4 if exact else 0.1
    if worst > limit:
        raise AssertionError(f"{dtype}: engine logprobs differ from a plain forward by {worst:.2e}")
    report("hf_engine", device=device, dtype=dtype, max_logprob_error=worst)


def _logprob_error(
    model: Any, prompt: list[int], reply: list[int], logprobs: list[float], device: str
) -> float:
    ids = torch.tensor([prompt + reply], device=device)
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1].float()
    want = torch.log_softmax(logits, -1).gather(-1, torch.tensor(reply, device=device)[:, None])
    return float((want.squeeze(-1).cpu() - torch.tensor(logprobs)).abs().max())


# ----------------------------------------------------------------------- learner
def trajectories(n: int, length: int, reply: int, vocab: int, seed: int = 0) -> list[Any]:
    """Random one-turn trajectories: `length - reply` prompt tokens, `reply` action tokens."""
    from actorlearner.trajectory import Trajectory

    g = torch.Generator().manual_seed(seed)
    out = []
    for k in range(n):
        mask = [0] * (length - reply) + [1] * reply
        rewards = [0.0] * (length - 1) + [float(k % 2)]
        ids = torch.randint(10, vocab, (length,), generator=g).tolist()
        out.append(Trajectory(ids, [-5.0 * a for a in mask], mask, rewards, turn_ends=[length - 1]))
    return out


def make_learner(model_dir: str, stage: int, lora: bool, dtype: str, micro: int) -> Any:
    from actorlearner.learner.config import LearnerConfig, LoRAConfig, PPOConfig
    from actorlearner.learner.deepspeed_backend import DeepSpeedLearner

    cfg = LearnerConfig(
        model=model_dir,
        deepspeed_config="zero3" if stage == 3 else "zero2",
        zero_stage=stage,
        dtype=dtype,
        lr=1e-4,
        micro_batch_size=micro,
        lora=LoRAConfig(enabled=lora, dropout=0.0),
        ppo=PPOConfig(epochs=1, num_minibatches=1),
    )
    return DeepSpeedLearner(cfg)


def check_export_greedy(learner: Any, device: str, dtype: str) -> None:
    """The exported weights in a CUDA (or CPU) HF engine reproduce the policy's greedy tokens."""
    from transformers import AutoModelForCausalLM

    from actorlearner.engines.base import SamplingParams
    from actorlearner.engines.hf import HFEngine
    from actorlearner.learner.export import hf_model
    from actorlearner.learner.policy import greedy_continuation

    backend = learner.backend
    state = learner.state_dict_for_actors()
    config = hf_model(backend.policy).config
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype)).to(device)
    engine = HFEngine(model=model, tokenizer=learner.tokenizer)
    engine.load_weights(state, version=1)
    prompt = learner.tokenizer("def f(x):\n    return", add_special_tokens=False)["input_ids"]
    got = engine.generate([prompt], SamplingParams(max_new_tokens=16, temperature=0.0))[0]
    want, _ = greedy_continuation(backend.policy, prompt, 16, backend.device)
    if not same_greedy(engine.model, prompt, got.token_ids, want, device, dtype == "float32"):
        raise AssertionError(f"exported weights give {got.token_ids}, the policy {want}")


def check_deepspeed(model_dir: str, device: str, stage: int, lora: bool) -> None:
    learner = make_learner(model_dir, stage, lora, "float32", micro=2)
    metrics = learner.ppo_step(trajectories(4, 48, 16, len(learner.tokenizer)))
    if not all(map(_finite, (metrics["loss/policy"], metrics["grad_norm"]))):
        raise AssertionError(f"ZeRO-{stage} lora={lora}: non-finite metrics {metrics}")
    check_export_greedy(learner, device, "float32")
    report("deepspeed", device=device, zero=stage, lora=lora, loss=metrics["loss/policy"])


def _finite(x: float) -> bool:
    return x == x and abs(x) != float("inf")


# ----------------------------------------------------------------------- full size
def qwen_1p5b(out: Path) -> str:
    """Random-init Qwen2.5-Coder-1.5B (its published config) with the shipped tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config

    from actorlearner.base_model import BASE_MODEL_DIR

    tok = AutoTokenizer.from_pretrained(BASE_MODEL_DIR)
    tok.save_pretrained(out)
    config = Qwen2Config(
        vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
        num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=32768,
        rope_theta=1e6, tie_word_embeddings=True, pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).save_pretrained(out)
    return str(out)


def check_full_size(work: Path, device: str) -> None:
    model_dir = qwen_1p5b(work / "qwen1p5b")
    learner = make_learner(model_dir, 2, False, "bfloat16", micro=4)
    torch.cuda.reset_peak_memory_stats()
    steps = []
    for seed in range(2):
        batch = trajectories(16, 1024, 512, len(learner.tokenizer), seed)
        start = time.perf_counter()
        metrics = learner.ppo_step(batch)
        torch.cuda.synchronize()
        steps.append(time.perf_counter() - start)
        if not _finite(metrics["loss/policy"]):
            raise AssertionError(f"full-size PPO step {seed}: loss {metrics['loss/policy']}")
    start = time.perf_counter()
    check_export_greedy(learner, device, "bfloat16")
    report(
        "full_size_qwen2.5_coder_1.5b_bf16",
        peak_gib=torch.cuda.max_memory_allocated() / 2**30,
        step_s=steps,
        export_and_check_s=time.perf_counter() - start,
        tokens_per_step=16 * 1024,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="skip the full-size model")
    args = parser.parse_args()
    from actorlearner.tiny import build_tiny_model

    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        tiny = str(build_tiny_model(Path(tmp) / "tiny"))
        for dtype in ("float32", "bfloat16"):
            check_hf_engine(tiny, args.device, dtype)
        if importlib.util.find_spec("deepspeed") is None:
            report("deepspeed", skipped="DeepSpeed is not installed")
        else:
            for stage, lora in ((2, False), (3, False), (2, True), (3, True)):
                check_deepspeed(tiny, args.device, stage, lora)
            if not args.quick and args.device == "cuda":
                check_full_size(Path(tmp), args.device)
    print(f"gpu check ok on {args.device}")


if __name__ == "__main__":
    main()
