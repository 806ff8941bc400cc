"""Time one PPO update through the DeepSpeed learner against a plain torch loop.

Both sides run in this process on the same model, the same rollout batch and the same
math (scoring, KL-shaped rewards, GAE, whitening, clipped losses, AdamW, grad clipping,
identical mini-batch order), alternating so machine load hits both alike. Prints
seconds per update, the ratio, and how far apart the two sets of weights end up.

    python scripts/bench_learner.py --hidden 256 --layers 4 --batch 32 --length 256
"""

from __future__ import annotations

import statistics
import tempfile
import time

import torch
import typer

from actorlearner.learner import LearnerConfig, PPOConfig, ppo
from actorlearner.learner.batch import chunks, collate
from actorlearner.learner.policy import build_policy, merged_state_dict, target_logprobs
from actorlearner.trajectory import Trajectory


def make_batch(n: int, length: int, vocab: int, seed: int = 0) -> list[Trajectory]:
    """Rollout-shaped trajectories: a prompt, a reply with rewards at span ends, feedback, reply."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for k in range(n):
        prompt = length // 4
        reply = (length - prompt) // 3
        mask = [0] * prompt + [1] * reply + [0] * reply + [1] * (length - prompt - 2 * reply)
        rewards = [0.0] * length
        rewards[prompt + reply // 2] = 0.5 * (k % 2)
        rewards[prompt + reply - 1] = float(k % 3 == 0)
        rewards[-1] = float(k % 2)
        ids = torch.randint(10, vocab, (length,), generator=g).tolist()
        out.append(Trajectory(ids, [-5.0 * a for a in mask], mask, rewards))
    return out


class TorchPPO:
    """The learner's PPO update written as a plain single-process torch loop."""

    def __init__(self, cfg: LearnerConfig):
        self.cfg = cfg
        self.policy, self.reference = build_policy(cfg)
        params = [p for p in self.policy.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(
            params, lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=cfg.weight_decay
        )
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.pad_id = 1

    @torch.no_grad()
    def prepare(self, trajs: list[Trajectory]):
        p = self.cfg.ppo
        batch = collate(trajs, self.pad_id)
        values = torch.zeros_like(batch.rewards)
        ref = torch.zeros_like(batch.rewards)
        self.policy.eval()
        for micro in chunks(range(len(trajs)), self.cfg.micro_batch_size):
            ids, attn = batch.input_ids[micro], batch.attention_mask[micro]
            _, v = self.policy(ids, attn)
            ref_logits = self.reference(input_ids=ids, attention_mask=attn, use_cache=False).logits
            values[micro] = v[:, :-1]
            ref[micro] = target_logprobs(ref_logits, ids, p.temperature)
        self.policy.train()
        mask = batch.action_mask
        rewards, _ = ppo.shaped_rewards(batch.rewards, batch.old_logprobs, ref, mask, p.kl_coef)
        values = values * mask
        adv, ret = ppo.gae(rewards, values, mask, p.gamma, p.lam)
        return batch, values, ppo.masked_whiten(adv, mask), ret

    def step(self, trajs: list[Trajectory]) -> None:
        p = self.cfg.ppo
        batch, old_values, adv, ret = self.prepare(trajs)
        mask = batch.action_mask
        n = len(trajs)
        size = -(-n // p.num_minibatches)
        for _ in range(p.epochs):
            perm = torch.randperm(n, generator=self.generator).tolist()
            for mb in (perm[i : i + size] for i in range(0, n, size)):
                normalizer = mask[mb].sum().clamp(min=1)
                for micro in chunks(mb, self.cfg.micro_batch_size):
                    ids, attn = batch.input_ids[micro], batch.attention_mask[micro]
                    logits, values = self.policy(ids, attn)
                    logp = target_logprobs(logits, ids, p.temperature)
                    m = mask[micro]
                    pg, _ = ppo.policy_loss(
                        logp, batch.old_logprobs[micro], adv[micro], m, p.clip_ratio, normalizer
                    )
                    vf = ppo.value_loss(
                        values[:, :-1], old_values[micro], ret[micro], m, p.value_clip, normalizer
                    )
                    with torch.no_grad():
                        ppo.masked_sum(ppo.entropy_from_logits(logits[:, :-1]), m)
                    (pg.loss + p.vf_coef * vf.loss).backward()
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.cfg.max_grad_norm)
                self.opt.step()
                self.opt.zero_grad(set_to_none=True)


def main(
    hidden: int = 256,
    layers: int = 4,
    batch: int = 32,
    length: int = 256,
    iters: int = 3,
    zero_stage: int = 2,
    micro_batch_size: int = 8,
    threads: int = 1,
) -> None:
    from actorlearner.learner.deepspeed_backend import DeepSpeedLearner
    from actorlearner.tiny import build_tiny_model

    torch.set_num_threads(threads)
    model_dir = build_tiny_model(
        tempfile.mkdtemp(prefix="bench_model_"), hidden=hidden, layers=layers
    )
    cfg = LearnerConfig(
        model=str(model_dir),
        zero_stage=zero_stage,
        lr=1e-4,
        micro_batch_size=micro_batch_size,
        ppo=PPOConfig(epochs=2, num_minibatches=2, max_staleness=10**9),
    )
    ds = DeepSpeedLearner(cfg)
    plain = TorchPPO(cfg)
    plain.pad_id = ds.pad_id
    n_params = sum(p.numel() for p in plain.policy.parameters())
    trajs = make_batch(batch, length, vocab=len(ds.tokenizer))
    wall: dict[str, list[float]] = {"deepspeed": [], "torch": []}
    cpu: dict[str, list[float]] = {"deepspeed": [], "torch": []}
    for it in range(iters + 1):  # the first round warms up both
        for name, run in (("deepspeed", ds.ppo_step), ("torch", plain.step)):
            start, start_cpu = time.perf_counter(), time.process_time()
            run(trajs)
            if it > 0:
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
    ds_s, torch_s = (statistics.median(wall[k]) for k in ("deepspeed", "torch"))
    ds_cpu, torch_cpu = (statistics.median(cpu[k]) for k in ("deepspeed", "torch"))
    ds_w = ds.state_dict_for_actors()
    drift = max(
        (ds_w[k] - v).abs().max().item() for k, v in merged_state_dict(plain.policy).items()
    )
    tokens = batch * length
    print(
        f"model {n_params / 1e6:.2f}M params, batch {batch} x {length} tokens, "
        f"ZeRO-{zero_stage}, {threads} threads, {iters} timed updates each"
    )
    print(f"deepspeed: {ds_s:.3f} s/update wall, {ds_cpu:.3f} s CPU ({tokens / ds_s:.0f} tokens/s)")
    print(
        f"torch:     {torch_s:.3f} s/update wall, {torch_cpu:.3f} s CPU ({tokens / torch_s:.0f} tokens/s)"
    )
    print(f"ratio deepspeed/torch: {ds_s / torch_s:.3f} wall, {ds_cpu / torch_cpu:.3f} CPU time")
    print(f"max |weight difference| after {iters + 1} identical updates: {drift:.2e}")


if __name__ == "__main__":
    typer.run(main)
