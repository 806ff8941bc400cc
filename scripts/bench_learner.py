"""Time one PPO update through the DeepSpeed backend against the plain torch backend.

Both run the same `ppo_update` in this process on the same model and rollout batch
(scoring, KL-shaped rewards, GAE, whitening, clipped losses, AdamW, grad clipping,
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

from actorlearner.learner import LearnerConfig, PPOConfig
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
    from actorlearner.learner.torch_backend import TorchLearner
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
    plain = TorchLearner(cfg)
    n_params = sum(p.numel() for p in plain.torch_backend.policy.parameters())
    trajs = make_batch(batch, length, vocab=len(ds.tokenizer))
    wall: dict[str, list[float]] = {"deepspeed": [], "torch": []}
    cpu: dict[str, list[float]] = {"deepspeed": [], "torch": []}
    for it in range(iters + 1):  # the first round warms up both
        for name, run in (("deepspeed", ds.ppo_step), ("torch", plain.ppo_step)):
            start, start_cpu = time.perf_counter(), time.process_time()
            run(trajs)
            if it > 0:
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
    ds_s, torch_s = (statistics.median(wall[k]) for k in ("deepspeed", "torch"))
    ds_cpu, torch_cpu = (statistics.median(cpu[k]) for k in ("deepspeed", "torch"))
    ds_w, plain_w = ds.state_dict_for_actors() or {}, plain.state_dict_for_actors() or {}
    drift = max((ds_w[k] - v).abs().max().item() for k, v in plain_w.items())
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
