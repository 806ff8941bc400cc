"""Rollout throughput: generated tokens/s through the Ray rollout actors (generation +
sandboxed env steps + token bookkeeping) versus plain `model.generate` on the same
model and the same first-turn prompts, in one run. Also shows whether overlapping env
steps with generation helps (episode runner in-process, overlap off / on / auto), and,
for presets with CodeBLEU or explanation similarity (`--rewards ledex`), a Ray actor
that computes them inline in env.step instead of in the reward worker process.

Every path is timed `--reps` times, interleaved, and the best and median are printed:
on a shared machine single timings are noisy.

    python scripts/bench_rollout.py                      # the shipped base model (CPU policy)
    python scripts/bench_rollout.py --model tiny         # a 64-wide random model, built here
    python scripts/bench_rollout.py --model PATH --batch 16 --max-new-tokens 128

The ratio depends on how the policy's cost per token compares with the rewards' cost
per reply: the shipped base model is the policy the CPU pipeline trains; the random
`tiny` model generates ~8x faster, so reward work weighs ~8x more against it.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable

import typer

app = typer.Typer(add_completion=False)


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


def plain_generate(model, tokenizer, prompts, max_new: int, stop_id: int, rounds: int):
    """Plain `model.generate`: left-padded batch, sampling at temperature 1, stop at <|im_end|>."""
    import torch

    tokenizer.padding_side = "left"
    batch = tokenizer.pad({"input_ids": prompts}, return_tensors="pt")
    kw = dict(do_sample=True, temperature=1.0, top_k=None, top_p=None, max_new_tokens=max_new)
    kw |= dict(eos_token_id=stop_id, pad_token_id=tokenizer.pad_token_id)

    def run() -> int:
        tokens = 0
        with torch.inference_mode():
            for _ in range(rounds):
                out = model.generate(**batch, **kw)[:, batch["input_ids"].shape[1] :]
                for row in out.tolist():  # up to and including the first stop token
                    tokens += row.index(stop_id) + 1 if stop_id in row else len(row)
        return tokens

    return run


def in_process(engine, tokenizer, env_kwargs, batch, episodes, sampling, overlap):
    import gymnasium

    import envs  # noqa: F401
    from actorlearner.rollout.runner import EpisodeRunner

    env_list = [gymnasium.make("CodeRefine-v0", **env_kwargs) for _ in range(batch)]
    runner = EpisodeRunner(engine, tokenizer, env_list, overlap=overlap, seed=0)
    runner.run(batch, sampling)  # warm-up (reward models, sandbox)
    return lambda: sum(sum(t.action_mask) for t in runner.run(episodes, sampling))


def ray_actor(model_path, env_kwargs, batch, episodes, sampling, overlap):
    from actorlearner.rollout.config import RolloutConfig
    from actorlearner.rollout.group import RolloutGroup

    cfg = RolloutConfig(
        model_path=model_path,
        num_actors=1,
        envs_per_actor=batch,
        num_cpus_per_actor=0.5,  # two groups share the 2-CPU Ray node; one runs at a time
        env_kwargs=env_kwargs,
        max_new_tokens=sampling.max_new_tokens,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        overlap_env=overlap,
    )
    group = RolloutGroup(cfg)
    group.wait_ready(timeout_s=900)
    group.rollout(batch)  # warm-up
    return lambda: sum(sum(t.action_mask) for t in group.rollout(episodes)), group


def inline_rewards(preset: str) -> list[dict] | None:
    """The preset with its worker terms (CodeBLEU, similarity) computed inline; None if none."""
    from envs.rewards.composite import PRESETS

    terms = PRESETS.get(preset, [])
    heavy = ("codebleu", "explanation_similarity")
    if not any(t["name"] in heavy for t in terms):
        return None
    return [{**t, "options": {"worker": False}} if t["name"] in heavy else t for t in terms]


def start_ray() -> None:
    import ray

    for attempt in range(3):  # the raylet's 30 s start-up limit can trip on a loaded machine
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            return
        except Exception as exc:
            print(f"ray.init failed ({exc}); retrying")
            ray.shutdown()
            if attempt == 2:
                raise


@app.command()
def main(
    model: str = typer.Option(
        "base", help="model directory, 'base' (the shipped base model) or 'tiny' (random)"
    ),
    problems: str = typer.Option("synthetic:train", help="problem spec for CodeRefine-v0"),
    batch: int = typer.Option(8, help="envs per actor = the generate batch size"),
    rounds: int = typer.Option(3, help="batches of episodes per timing"),
    reps: int = typer.Option(3, help="timings per path (interleaved)"),
    max_new_tokens: int = typer.Option(64),
    rewards: str = typer.Option("tests", help="reward preset of the env"),
) -> None:
    import ray
    import torch

    from actorlearner.chat import IM_END
    from actorlearner.engines.base import SamplingParams
    from actorlearner.engines.hf import HFEngine
    from actorlearner.models import load_model

    torch.set_num_threads(1)
    if model == "base":
        from actorlearner.base_model import BASE_MODEL_DIR

        model = str(BASE_MODEL_DIR)
    elif model == "tiny":
        from actorlearner.tiny import build_tiny_model

        model = str(build_tiny_model(tempfile.mkdtemp(prefix="bench_model_")))
    # one turn per episode: each episode is one generation + one env step, so every path
    # generates the same batches as the plain baseline
    env_kwargs = {"problems": problems, "max_turns": 1, "rewards": rewards}
    hf_model, tok = load_model(model, dtype="float32", device="cpu")
    stop = tok.convert_tokens_to_ids(IM_END)
    assert isinstance(stop, int), "the tokenizer has no <|im_end|> token"
    sampling = SamplingParams(
        max_new_tokens=max_new_tokens, temperature=1.0, stop_token_ids=(stop,)
    )
    episodes = batch * rounds
    # its own copy: the engine switches its model's CPU decoding attention, the baseline keeps SDPA
    engine = HFEngine(model, dtype="float32", device="cpu")
    prompts = first_prompts(env_kwargs, tok, batch, seed=0)

    paths: dict[str, Callable[[], int]] = {
        "model.generate": plain_generate(hf_model, tok, prompts, max_new_tokens, stop, rounds)
    }
    for overlap in (False, True, "auto"):
        paths[f"runner in-process, overlap={overlap}"] = in_process(
            engine, tok, env_kwargs, batch, episodes, sampling, overlap
        )
    start_ray()
    try:
        groups = []
        for overlap in (False, "auto"):
            run, group = ray_actor(model, env_kwargs, batch, episodes, sampling, overlap)
            paths[f"Ray rollout actor, overlap={overlap}"] = run
            groups.append(group)
        if inline := inline_rewards(rewards):  # the same terms computed inside env.step
            kwargs = {**env_kwargs, "rewards": inline}
            run, group = ray_actor(model, kwargs, batch, episodes, sampling, "auto")
            paths["Ray rollout actor, rewards inline"] = run
            groups.append(group)
        paths["model.generate"]()  # warm-up
        rates: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(reps):
            for name, run in paths.items():
                t0 = time.perf_counter()
                tokens = run()
                rates[name].append(tokens / (time.perf_counter() - t0))
    finally:
        ray.shutdown()

    ref = max(rates["model.generate"])
    print(f"\nmodel={model} batch={batch} max_new_tokens={max_new_tokens} episodes={episodes}")
    print(f"{'path':42s} {'best tok/s':>10s} {'median':>8s} {'best/gen':>8s}")
    for name, r in rates.items():
        best = max(r)
        print(f"{name:42s} {best:10.1f} {statistics.median(r):8.1f} {best / ref:8.2f}")
    print("best/gen = best tokens/s of the path over the best of plain model.generate")


if __name__ == "__main__":
    app()
