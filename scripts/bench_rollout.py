"""Rollout throughput: generated tokens/s through the Ray rollout actors (generation +
sandboxed env steps + token bookkeeping) versus plain `model.generate` on the same
model and the same first-turn prompts, measured in one run. Also measures whether
overlapping env steps with generation helps (in-process episode runner, on vs off).

    python scripts/bench_rollout.py                      # tiny random model built on the fly
    python scripts/bench_rollout.py --model PATH --batch 16 --max-new-tokens 128
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass

import typer

app = typer.Typer(add_completion=False)


@dataclass
class Result:
    name: str
    tokens: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds


def first_prompts(env_kwargs: dict, tokenizer, n: int, seed: int) -> list[list[int]]:
    """The first-turn prompt ids of `n` episodes, exactly as the rollout path builds them."""
    import gymnasium

    import envs  # noqa: F401

    env = gymnasium.make("CodeRefine-v0", **env_kwargs)
    prompts = []
    for i in range(n):
        _, info = env.reset(seed=seed + i)
        text = tokenizer.apply_chat_template(
            info["messages"], add_generation_prompt=True, tokenize=False
        )
        prompts.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    env.close()
    return prompts


def bench_generate(model, tokenizer, prompts, max_new: int, stop_id: int, rounds: int) -> Result:
    """Plain `model.generate`: left-padded batch, sampling at temperature 1, stop at <|im_end|>."""
    import torch

    tokenizer.padding_side = "left"
    batch = tokenizer.pad({"input_ids": prompts}, return_tensors="pt")
    kw = dict(do_sample=True, temperature=1.0, top_k=None, top_p=None, max_new_tokens=max_new)
    kw |= dict(eos_token_id=stop_id, pad_token_id=tokenizer.pad_token_id)
    tokens, t0 = 0, time.perf_counter()
    with torch.inference_mode():
        for _ in range(rounds):
            out = model.generate(**batch, **kw)[:, batch["input_ids"].shape[1] :]
            # count up to and including the first stop token (padding after it is not output)
            for row in out.tolist():
                tokens += row.index(stop_id) + 1 if stop_id in row else len(row)
    return Result("model.generate", tokens, time.perf_counter() - t0)


def bench_runner(engine, tokenizer, env_kwargs, batch, episodes, sampling, overlap) -> Result:
    import gymnasium

    import envs  # noqa: F401
    from actorlearner.rollout.runner import EpisodeRunner

    env_list = [gymnasium.make("CodeRefine-v0", **env_kwargs) for _ in range(batch)]
    runner = EpisodeRunner(engine, tokenizer, env_list, overlap=overlap, seed=0)
    runner.run(batch, sampling)  # warm-up (reward models, sandbox caches)
    t0 = time.perf_counter()
    trajs = runner.run(episodes, sampling)
    sec = time.perf_counter() - t0
    runner.close()
    name = f"runner in-process, overlap={overlap}"
    print(
        f"  {name}: generate {runner.timings['generate_s']:.2f}s, env (threads) "
        f"{runner.timings['env_s']:.2f}s, blocked on env {runner.timings['env_wait_s']:.2f}s"
    )
    return Result(name, sum(sum(t.action_mask) for t in trajs), sec)


def bench_actors(model_path, env_kwargs, batch, episodes, sampling, modes) -> list[Result]:
    """One Ray rollout actor per mode (one Ray start for all: it is slow on a busy machine)."""
    import ray

    from actorlearner.rollout.config import RolloutConfig
    from actorlearner.rollout.group import RolloutGroup

    for attempt in range(3):  # the raylet's 30 s start-up limit can trip on a loaded machine
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            break
        except Exception as exc:
            print(f"  ray.init failed ({exc}); retrying")
            ray.shutdown()
            if attempt == 2:
                raise
    out = []
    try:
        for overlap in modes:
            cfg = RolloutConfig(
                model_path=model_path,
                num_actors=1,
                envs_per_actor=batch,
                num_cpus_per_actor=1,
                env_kwargs=env_kwargs,
                sampling=sampling,
                overlap_env=overlap,
            )
            group = RolloutGroup(cfg)
            group.wait_ready(timeout_s=900)
            group.rollout(batch)  # warm-up
            t0 = time.perf_counter()
            trajs = group.rollout(episodes)
            sec = time.perf_counter() - t0
            t = group.info()[0]["timings"]
            print(
                f"  Ray actor, overlap={overlap}: generate {t['generate_s']:.2f}s, env (threads) "
                f"{t['env_s']:.2f}s, blocked on env {t['env_wait_s']:.2f}s"
            )
            group.shutdown()
            tokens = sum(sum(tr.action_mask) for tr in trajs)
            out.append(Result(f"Ray rollout actor, overlap={overlap}", tokens, sec))
    finally:
        ray.shutdown()
    return out


@app.command()
def main(
    model: str = typer.Option("", help="model directory; default: a tiny random model"),
    problems: str = typer.Option("synthetic:train", help="problem spec for CodeRefine-v0"),
    batch: int = typer.Option(8, help="envs per actor = the generate batch size"),
    rounds: int = typer.Option(3, help="batches of episodes timed"),
    max_new_tokens: int = typer.Option(64),
    rewards: str = typer.Option("tests", help="reward preset of the env"),
) -> None:
    import torch

    from actorlearner.chat import IM_END
    from actorlearner.engines.base import SamplingParams
    from actorlearner.engines.hf import HFEngine
    from actorlearner.models import load_model

    torch.set_num_threads(1)
    if not model:
        from actorlearner.tiny import build_tiny_model

        model = str(build_tiny_model(tempfile.mkdtemp(prefix="bench_model_")))
    # one turn per episode: each episode is one generation + one sandboxed step, so the
    # actor path generates the same batches as the plain baseline
    env_kwargs = {"problems": problems, "max_turns": 1, "rewards": rewards}
    hf_model, tok = load_model(model, dtype="float32", device="cpu")
    stop = tok.convert_tokens_to_ids(IM_END)
    assert isinstance(stop, int), "the tokenizer has no <|im_end|> token"
    sampling = SamplingParams(
        max_new_tokens=max_new_tokens, temperature=1.0, stop_token_ids=(stop,)
    )
    episodes = batch * rounds

    prompts = first_prompts(env_kwargs, tok, batch, seed=0)
    bench_generate(hf_model, tok, prompts, max_new_tokens, stop, 1)  # warm-up
    base = bench_generate(hf_model, tok, prompts, max_new_tokens, stop, rounds)
    engine = HFEngine(model=hf_model, tokenizer=tok)
    results = [base]
    results += [
        bench_runner(engine, tok, env_kwargs, batch, episodes, sampling, o)
        for o in (False, True, "auto")
    ]
    base_again = bench_generate(hf_model, tok, prompts, max_new_tokens, stop, rounds)
    results += bench_actors(model, env_kwargs, batch, episodes, sampling, (False, "auto"))
    results.append(base_again)
    ref = (base.rate + base_again.rate) / 2
    print(f"\nmodel={model} batch={batch} max_new_tokens={max_new_tokens} episodes={episodes}")
    print(f"{'path':45s} {'tokens':>7s} {'seconds':>8s} {'tok/s':>8s} {'ratio':>6s}")
    for r in results:
        print(f"{r.name:45s} {r.tokens:7d} {r.seconds:8.2f} {r.rate:8.1f} {r.rate / ref:6.2f}")
    print("ratio = tokens/s divided by the mean of the two model.generate runs (same process)")


if __name__ == "__main__":
    app()
