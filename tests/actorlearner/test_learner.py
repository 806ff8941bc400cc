"""The DeepSpeed learner on the tiny model, for real: gloo, ZeRO, Ray, TensorBoard."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from actorlearner.learner import LearnerConfig, LoRAConfig, PPOConfig
from actorlearner.trajectory import Trajectory

PROMPT = [3, 40, 41, 42, 43]


@pytest.fixture(scope="module")
def make_learner(tiny_model_dir):
    from actorlearner.learner.deepspeed_backend import DeepSpeedLearner

    torch.set_num_threads(1)

    def make(**kw):
        kw.setdefault("lr", 1e-3)
        kw.setdefault("micro_batch_size", 4)
        return DeepSpeedLearner(LearnerConfig(model=str(tiny_model_dir), **kw))

    return make


def synthetic_batch(seed: int, n: int = 8, version: int = 0) -> list[Trajectory]:
    """Two-turn trajectories: prompt, reply, feedback, reply; rewards at span ends."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for k in range(n):
        prompt, reply1, feedback, reply2 = 4 + k % 3, 5 + k % 4, 3, 4 + k % 2
        mask = [0] * prompt + [1] * reply1 + [0] * feedback + [1] * reply2
        length = len(mask)
        ids = torch.randint(10, 400, (length,), generator=g).tolist()
        logprobs = [(-6.0 + 0.1 * k) * a for a in mask]
        rewards = [0.0] * length
        end1 = prompt + reply1 - 1
        rewards[end1 - 2] = 0.3 * (k % 2)  # explanation reward inside turn 1
        rewards[end1] = float(k % 3 == 0)  # turn-1 code reward
        rewards[-1] = float(k % 2)  # turn-2 code reward
        out.append(
            Trajectory(
                ids,
                logprobs,
                mask,
                rewards,
                turn_ends=[end1, length - 1],
                reward_terms={"unit_tests": float(k % 2), "explanation": 0.3 * (k % 2)},
                policy_version=version,
                task_id=f"t{k}",
            )
        )
    return out


# --------------------------------------------------------------- toy PPO task
TARGET_MOD = 4  # reward: share of sampled tokens whose id is divisible by 4 (base rate ~1/4)


@torch.no_grad()
def sample(model, n: int, new_tokens: int, gen: torch.Generator, version: int) -> list[Trajectory]:
    ids = torch.tensor([PROMPT] * n)
    steps = []
    for _ in range(new_tokens):
        logp = torch.log_softmax(model(input_ids=ids).logits[:, -1].float(), -1)
        tok = torch.multinomial(logp.exp(), 1, generator=gen)
        steps.append(logp.gather(-1, tok))
        ids = torch.cat([ids, tok], 1)
    logps = torch.cat(steps, 1)
    out = []
    for row in range(n):
        gen_ids = ids[row, len(PROMPT) :].tolist()
        reward = sum(t % TARGET_MOD == 0 for t in gen_ids) / new_tokens
        total = len(PROMPT) + new_tokens
        out.append(
            Trajectory(
                ids[row].tolist(),
                [0.0] * len(PROMPT) + logps[row].tolist(),
                [0] * len(PROMPT) + [1] * new_tokens,
                [0.0] * (total - 1) + [reward],
                reward_terms={"toy": reward},
                policy_version=version,
            )
        )
    return out


@pytest.mark.parametrize(
    ("advantage", "off_policy"),
    [("gae", "none"), ("group", "none"), ("group", "decoupled"), ("group", "tis")],
)
def test_ppo_raises_toy_reward(make_learner, tiny_model_dir, advantage, off_policy):
    from transformers import AutoModelForCausalLM

    ppo_cfg = PPOConfig(
        kl_coef=0.01,
        gamma=1.0,
        lam=0.95,
        epochs=2,
        num_minibatches=2,
        advantage=advantage,
        off_policy=off_policy,
    )
    learner = make_learner(lr=1e-2, micro_batch_size=16, ppo=ppo_cfg)
    actor = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    gen = torch.Generator().manual_seed(0)
    rewards = []
    for _ in range(8):
        actor.load_state_dict(learner.state_dict_for_actors())
        batch = sample(actor, 32, 3, gen, learner.version)
        for i, traj in enumerate(batch):
            traj.stats["group"] = f"g{i // 4}"  # the critic-free estimator's baseline groups
        metrics = learner.ppo_step(batch)
        rewards.append(metrics["reward/toy"])
        assert metrics["staleness/dropped"] == 0
    print("toy reward per iteration:", [round(r, 3) for r in rewards])
    # base rate ~0.25; with these settings the last two iterations reach ~0.8 (seeds 0-3)
    assert sum(rewards[-2:]) / 2 > sum(rewards[:2]) / 2 + 0.3


def test_torch_and_deepspeed_backends_give_the_same_updates(make_learner, tiny_model_dir):
    """One `ppo_update` over two backends: the interface carries everything the update needs."""
    from actorlearner.learner.torch_backend import TorchLearner

    cfg = dict(warmup_steps=2, ppo=PPOConfig(off_policy="decoupled", epochs=2, num_minibatches=2))
    batches = [synthetic_batch(seed=i, version=i) for i in range(2)]
    plain = TorchLearner(
        LearnerConfig(model=str(tiny_model_dir), lr=1e-3, micro_batch_size=4, **cfg)
    )
    ds = make_learner(zero_stage=0, **cfg)
    for batch in batches:
        m_ds, m_plain = ds.ppo_step(batch), plain.ppo_step(batch)
        for k in ("loss/policy", "loss/value", "clipfrac", "kl", "grad_norm", "lr"):
            assert m_plain[k] == pytest.approx(m_ds[k], rel=1e-4, abs=1e-6), k
        weight = m_ds["off_policy/behaviour_weight_mean"]
        assert abs(weight - 1) > 0.05, weight  # fake behaviour logprobs: the weights matter
    w_ds, w_plain = ds.state_dict_for_actors(), plain.state_dict_for_actors()
    for name, tensor in w_plain.items():
        torch.testing.assert_close(tensor, w_ds[name], rtol=1e-4, atol=1e-5)


# -------------------------------------------------------------- resume & sync
def test_kill_and_resume_reproduces_next_updates(make_learner, tmp_path):
    cfg = dict(
        warmup_steps=3,  # the LR schedule state must survive the restart
        ppo=PPOConfig(kl_coef=0.05, kl_target=0.01, kl_horizon=20, epochs=2, num_minibatches=2),
    )
    batches = [synthetic_batch(seed=i, version=i) for i in range(4)]
    keys = ("loss/policy", "loss/value", "grad_norm", "kl_coef", "lr", "entropy")

    straight = make_learner(**cfg)
    expected = [straight.ppo_step(b) for b in batches]
    expected_weights = straight.state_dict_for_actors()
    del straight

    first = make_learner(**cfg)
    for b in batches[:2]:
        first.ppo_step(b)
    first.save_checkpoint(tmp_path, extra={"data": {"batch": 2}})
    del first

    torch.manual_seed(1234)  # a fresh process would start from other RNG states
    resumed = make_learner(**cfg)
    assert resumed.load_checkpoint(tmp_path) == {"data": {"batch": 2}}
    assert (resumed.version, resumed.step) == (2, 2)
    got = [resumed.ppo_step(b) for b in batches[2:]]
    for e, g in zip(expected[2:], got, strict=True):
        for k in keys:
            assert g[k] == pytest.approx(e[k], rel=1e-5, abs=1e-7), k
    for name, tensor in resumed.state_dict_for_actors().items():
        torch.testing.assert_close(tensor, expected_weights[name], rtol=1e-5, atol=1e-6)


def test_two_ranks_give_the_same_update_as_one(make_learner, tiny_model_dir, tmp_path):
    import ray

    from actorlearner.learner.group import LearnerGroup
    from actorlearner.learner.sft import SFTExample, collate_sft

    # 7 trajectories in 4 mini-batches (2, 2, 2, 1): the last leaves rank 1 without data
    ppo_cfg = PPOConfig(epochs=2, num_minibatches=4)
    batch = synthetic_batch(seed=7, n=7)
    sft = collate_sft([SFTExample(t.token_ids, t.action_mask) for t in batch[:3]], pad_id=1)
    one = make_learner(zero_stage=2, micro_batch_size=3, ppo=ppo_cfg)
    m1 = one.ppo_step(batch)
    s1 = one.sft_step(sft)
    w1 = one.state_dict_for_actors()

    cfg = LearnerConfig(
        model=str(tiny_model_dir), lr=1e-3, micro_batch_size=1, zero_stage=3, ppo=ppo_cfg
    )
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        group = LearnerGroup(cfg, num_ranks=2)
        m2 = group.ppo_step(batch)
        s2 = group.sft_step(sft)
        w2 = group.state_dict_for_actors()
        assert (group.version, group.step) == (1, 2)
        exported = group.export_hf(tmp_path / "hf")  # ZeRO-3: gathered across both ranks
        group.shutdown()
    finally:
        ray.shutdown()
    for k in ("loss/policy", "loss/value", "clipfrac", "entropy", "kl", "grad_norm"):
        assert m2[k] == pytest.approx(m1[k], rel=1e-4, abs=1e-6), k
    for k in ("loss/sft", "grad_norm"):
        assert s2[k] == pytest.approx(s1[k], rel=1e-4, abs=1e-6), k
    assert set(w1) == set(w2)
    initial = _initial(tiny_model_dir)
    moved = max((w1[k] - initial[k]).abs().max().item() for k in initial)
    assert moved > 1e-4  # the updates did something, so agreeing is meaningful
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], rtol=1e-4, atol=1e-5)
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(exported).state_dict()
    for name in w1:
        torch.testing.assert_close(loaded[name], w1[name], rtol=1e-4, atol=1e-5)


def _initial(model_dir) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir).state_dict()


# -------------------------------------------------------- LoRA, export, logs
def test_lora_reference_is_base_model_and_export_merges(make_learner, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    learner = make_learner(
        lr=1e-2, lora=LoRAConfig(enabled=True, r=4, alpha=8, dropout=0.0), ppo=PPOConfig(epochs=2)
    )
    for i in range(2):
        learner.ppo_step(synthetic_batch(seed=i, version=i))
    ids = torch.tensor([PROMPT + [50, 60, 70]])
    attn = torch.ones_like(ids)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        (ref,) = learner.backend.forward(ids, attn, [0], train=False, reference=True)
        (policy,) = learner.backend.forward(ids, attn, [0], train=False, values=False)
        ref_logits, policy_logits = ref.logits, policy.logits
        base_logits = base(input_ids=ids).logits
    torch.testing.assert_close(ref_logits, base_logits, rtol=1e-5, atol=1e-5)
    assert (policy_logits - base_logits).abs().max() > 1e-3  # adapters trained

    out = learner.export_hf(tmp_path / "hf", merge_lora=True)
    exported = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            exported(input_ids=ids).logits, policy_logits, rtol=1e-4, atol=1e-4
        )
    assert (out / "value_head.safetensors").exists()
    assert (out / "tokenizer.json").exists()

    from peft import PeftModel

    adapter_dir = learner.export_hf(tmp_path / "adapter", merge_lora=False)
    assert (adapter_dir / "adapter_config.json").exists()
    with_adapter = PeftModel.from_pretrained(base, adapter_dir).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            with_adapter(input_ids=ids).logits, policy_logits, rtol=1e-4, atol=1e-4
        )


def test_metrics_reach_tensorboard_and_stale_batches_are_counted(make_learner, tmp_path):
    from actorlearner.metrics import MetricsLogger, read_scalars

    learner = make_learner(ppo=PPOConfig(max_staleness=1))
    logger = MetricsLogger(tmp_path / "tb")
    for step in range(2):
        fresh = synthetic_batch(seed=step, version=learner.version)
        stale = synthetic_batch(seed=9, n=3, version=learner.version - 2)
        metrics = learner.ppo_step(fresh + stale)
        assert metrics["staleness/dropped"] == 3
        logger.log(metrics, step)
    logger.close()
    scalars = read_scalars(tmp_path / "tb")
    for key in (
        "loss/policy",
        "loss/value",
        "kl",
        "entropy",
        "clipfrac",
        "value_error",
        "grad_norm",
        "lr",
        "tokens_per_s",
        "reward/unit_tests",
        "reward/explanation",
        "staleness/dropped",
    ):
        assert [s for s, _ in scalars[key]] == [0, 1], key
    assert scalars["staleness/dropped"][0][1] == 3
    only_stale = learner.ppo_step(synthetic_batch(seed=1, n=2, version=-10))
    assert only_stale == {"staleness/dropped": 2.0}
    assert learner.version == 2  # nothing applied


def test_bad_config_errors_name_the_fix(tiny_model_dir):
    from actorlearner.learner.config import resolve_deepspeed_config

    with pytest.raises(FileNotFoundError, match="zero2"):
        resolve_deepspeed_config("zero9")
    assert resolve_deepspeed_config("zero3").name == "zero3.json"
    cfg = replace(LearnerConfig(), model="")
    from actorlearner.learner.policy import load_lm

    with pytest.raises(ValueError, match="model is empty"):
        load_lm(cfg)


GPU_SCRIPT = """
import json, sys
sys.path.insert(0, "tests/actorlearner")
from test_learner import synthetic_batch
from actorlearner.learner import LearnerConfig
from actorlearner.learner.deepspeed_backend import DeepSpeedLearner
learner = DeepSpeedLearner(LearnerConfig(model=sys.argv[1], dtype="bfloat16", zero_stage=2))
assert learner.backend.device.type == "cuda"
metrics = [learner.ppo_step(synthetic_batch(seed=i, version=i)) for i in range(2)]
print(json.dumps(metrics[-1]))
"""


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bf16_nccl_learner_on_gpu(tiny_model_dir):
    """NCCL + bf16 in a fresh process (this one may already hold a gloo group)."""
    import json
    import math
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", GPU_SCRIPT, str(tiny_model_dir)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    metrics = json.loads(out.stdout.strip().splitlines()[-1])
    assert all(math.isfinite(metrics[k]) for k in ("loss/policy", "loss/value", "grad_norm"))
