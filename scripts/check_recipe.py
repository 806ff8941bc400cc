"""Prove a GPU recipe's code path on a CPU: `python scripts/check_recipe.py configs/<recipe>.yaml`.

Builds a random-init model of the recipe's real architecture (Qwen2, Llama or
GPTBigCode) shrunk to a few small layers and saves it with a tokenizer; keeps the
recipe's LoRA settings, ZeRO stage, number of learner ranks, rollout actors and GPU
placement (Ray logical GPUs, gloo instead of NCCL, the HF engine standing in for vLLM);
runs one SFT step and one PPO iteration (rollout, update, weight push), then checks
that every rollout engine's greedy tokens and logprobs equal the learner policy's.
Weights go the way the run would send them (`rollout.weight_sync`): a recipe whose
actors have GPUs of their own pushes them collectively from learner rank 0 (gloo here,
NCCL on GPUs), a colocated one through the object store.
The last line printed contains `recipe ok`.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# What the CPU check changes in a recipe: precision, CPU shares, episode sizes, rates.
# Ranks, actors, GPU shares, LoRA and the DeepSpeed config stay as the recipe says.
SHRINK = [
    "model.dtype=float32",
    "rollout.engine=hf",
    "rollout.num_cpus_per_actor=0.25",
    "learner.num_cpus_per_rank=0.25",
    "rollout.envs_per_actor=1",
    "rollout.max_new_tokens=8",
    "rollout.temperature=1.0",
    "train.max_turns=1",
    "train.epochs=1",
    "train.lr=1e-3",
    "train.rewards=tests",  # no embedding model or CodeBLEU to load in every actor
    "sft.lr=1e-3",
]


def family(model_path: str) -> str:
    """The architecture a recipe's model belongs to (the hub is out of reach here)."""
    name = model_path.lower()
    for key, fam in (("qwen2", "qwen2"), ("llama", "llama"), ("starcoder", "gpt_bigcode")):
        if key in name:
            return fam
    raise SystemExit(f"check_recipe: no shrunk architecture known for model {model_path!r}")


def shrunk_config(fam: str, tok: Any) -> Any:
    """A few small layers of the family's real config class (same module names, same
    attention layout: Qwen2 q/k/v biases and grouped KV heads, GPTBigCode multi-query)."""
    from transformers import GPTBigCodeConfig, LlamaConfig, Qwen2Config

    ids = dict(
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    if fam == "gpt_bigcode":
        return GPTBigCodeConfig(n_embd=64, n_layer=2, n_head=4, multi_query=True, **ids)
    size = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, **ids)
    if fam == "qwen2":
        return Qwen2Config(
            num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, **size
        )
    return LlamaConfig(num_attention_heads=4, num_key_value_heads=4, **size)


def build_model(fam: str, out: Path) -> Path:
    """Random-init shrunk model + the shipped base model's tokenizer, in HF layout."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from actorlearner.base_model import BASE_MODEL_DIR

    tok = AutoTokenizer.from_pretrained(BASE_MODEL_DIR)  # the shipped code BPE
    tok.save_pretrained(out)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(shrunk_config(fam, tok))
    model.save_pretrained(out)
    return out


def logical_cluster(cfg: Any) -> tuple[int, int]:
    """(CPUs, GPUs) for a local Ray that holds the recipe's plan on logical resources."""
    from actorlearner.pipeline.plan import make_plan

    plan = make_plan(cfg)
    return max(2, math.ceil(plan.cpus)), int(plan.gpus)


def sft_batch(tokenizer: Any) -> Any:
    from actorlearner.learner.sft import SFTExample, collate_sft

    texts = ["The bug is an off-by-one error.\ndef f(x):\n    return x + 1\n"] * 2
    ids = [tokenizer(t)["input_ids"] for t in texts]
    examples = [SFTExample(i, [0] * 4 + [1] * (len(i) - 4)) for i in ids]
    return collate_sft(examples, pad_id=tokenizer.pad_token_id)


def first_reply(traj: Any) -> tuple[list[int], list[int], list[float]]:
    """(prompt, reply tokens, reply logprobs) of an episode's first turn."""
    mask = traj.action_mask
    start = mask.index(1)
    end = start
    while end < len(mask) and mask[end]:
        end += 1
    return traj.token_ids[:start], traj.token_ids[start:end], traj.logprobs[start:end]


def check_devices(learner: Any, placement: Any) -> str:
    """Every rank on its own GPU id, DeepSpeed's device index 0 (one visible GPU each)."""
    info = learner.device_info()
    gpus = [tuple(i["gpu_ids"]) for i in info]
    if placement is not None and len(set(gpus)) != len(gpus):
        raise AssertionError(f"two learner ranks share a GPU: {gpus}")
    if placement is not None and {i["local_rank"] for i in info} != {"0"}:
        raise AssertionError(f"LOCAL_RANK is not 0 on every GPU rank: {info}")
    return f"ranks on GPUs {[','.join(g) for g in gpus]}"


def initial_logprobs(model_dir: str, prompt: list[int], tokens: list[int]) -> list[float]:
    """Logprobs of `tokens` under the model as built, before any update."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.no_grad():
        logits = model(torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1 : -1]
    logp = torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(tokens)[:, None])
    return logp.squeeze(-1).tolist()


def check_greedy(learner: Any, rollouts: Any, actors: int, model_dir: str) -> int:
    """Each actor's greedy reply (tokens, logprobs) equals the learner policy's own, and its
    logprobs are not the initial model's (the pushes reached the engine)."""
    greedy = dataclasses.replace(rollouts.cfg.sampling, temperature=0.0)
    trajs = rollouts.rollout(actors, greedy, fixed=True)
    seen = set()
    for traj in trajs:
        prompt, tokens, logps = first_reply(traj)
        want, want_lp = learner.greedy(prompt, len(tokens))
        if want != tokens:
            raise AssertionError(f"actor {traj.stats['actor']}: engine {tokens} != policy {want}")
        if max(abs(a - b) for a, b in zip(logps, want_lp, strict=True)) > 1e-3:
            raise AssertionError(f"actor {traj.stats['actor']}: logprobs differ from the policy's")
        before = initial_logprobs(model_dir, prompt, tokens)
        if max(abs(a - b) for a, b in zip(logps, before, strict=True)) < 1e-6:
            raise AssertionError(f"actor {traj.stats['actor']}: still the initial weights")
        seen.add(traj.stats["actor"])
    if len(seen) != actors:
        raise AssertionError(f"only actors {sorted(seen)} of {actors} were checked")
    return len(trajs)


def run(recipe: Path, work: Path) -> str:
    import ray

    from actorlearner.config import load_config
    from actorlearner.learner.group import LearnerGroup
    from actorlearner.pipeline.components import learner_config, rollout_config
    from actorlearner.pipeline.plan import placement_for
    from actorlearner.pipeline.stages import load_problem_set
    from actorlearner.rollout.group import RolloutGroup

    real = load_config(recipe)
    fam = family(real.model.path)
    model = str(build_model(fam, work / "model"))
    _phase("model built")
    overrides = [*SHRINK, f"train.episodes_per_iteration={real.rollout.num_actors}"]
    cfg = load_config(recipe, overrides)
    cpus, gpus = logical_cluster(cfg)
    ray.init(num_cpus=cpus, num_gpus=gpus, include_dashboard=False, log_to_driver=False)
    placement = placement_for(cfg)
    rcfg = rollout_config(cfg, model, load_problem_set(cfg, "synthetic:train", 8), None)
    rcfg = dataclasses.replace(rcfg, engine_kwargs={"dtype": "float32", "device": "cpu"})
    rollouts = RolloutGroup(rcfg, placement)  # its actors start while the ranks set up
    lcfg = learner_config(cfg, model, work / "ckpt", "ppo")
    lr = cfg.learner
    learner = LearnerGroup(
        lcfg, lr.num_ranks, lr.num_cpus_per_rank, lr.num_gpus_per_rank, placement
    )
    _phase("groups created")
    try:
        return _iterate(cfg, fam, learner, rollouts, placement)
    finally:
        rollouts.shutdown()
        learner.shutdown()
        ray.shutdown()


def _iterate(cfg: Any, fam: str, learner: Any, rollouts: Any, placement: Any) -> str:
    from actorlearner.models import load_tokenizer

    devices = check_devices(learner, placement)
    rollouts.wait_ready()
    _phase("start")
    sft = learner.sft_step(sft_batch(load_tokenizer(cfg_model(learner))))
    _phase("sft step")
    rollouts.push_weights(learner)
    _phase("weight push")
    trajs = rollouts.rollout(cfg.train.episodes_per_iteration)
    _phase("rollout")
    ppo = learner.ppo_step(trajs)
    _phase("ppo step")
    rollouts.push_weights(learner)
    checked = check_greedy(learner, rollouts, cfg.rollout.num_actors, cfg_model(learner))
    _phase("push + greedy check")
    for name, value in (("sft loss", sft["loss/sft"]), ("ppo policy loss", ppo["loss/policy"])):
        if not math.isfinite(value):
            raise AssertionError(f"{name} is {value}")
    lora = "LoRA" if cfg.model.lora.enabled else "full"
    return (
        f"{fam}, {lora}, {cfg.learner.deepspeed_config}, {cfg.learner.num_ranks} ranks, "
        f"{cfg.rollout.num_actors} actors, {devices}, {rollouts.sync_mode} weight push; "
        f"sft loss {sft['loss/sft']:.3f}, "
        f"ppo v{learner.version} on {len(trajs)} episodes; {checked} greedy replies match"
    )


_CLOCK = [time.perf_counter()]


def _phase(name: str) -> None:
    """Seconds since the previous phase, on stderr (the last stdout line is the verdict)."""
    now = time.perf_counter()
    print(f"check_recipe: {name} {now - _CLOCK[0]:.1f} s", file=sys.stderr)
    _CLOCK[0] = now


def cfg_model(learner: Any) -> str:
    return learner.cfg.model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path, help="a run config, e.g. configs/starcoder-15b.yaml")
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="check_recipe_") as tmp:
        summary = run(args.recipe, Path(tmp))
    print(f"{args.recipe.stem}: recipe ok ({summary}; {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
