"""Weight push time: collective (learner rank 0 broadcasts buckets to the actors) against
the object store (rank 0's state through the driver and Ray's object store), on CPU.

One learner rank and `--actors` HF rollout actors on this machine, a random Llama of
`--hidden` width built here; each push is timed `--reps` times, interleaved, and the
medians and their ratio are printed (last line: `object_store / collective = R`).

    python scripts/bench_weight_sync.py                  # 512 wide, 4 layers (~50 MB fp32)
    python scripts/bench_weight_sync.py --hidden 1024 --reps 5
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import typer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

app = typer.Typer(add_completion=False)


def build_model(out: Path, hidden: int, layers: int) -> Path:
    """A random-init Llama with the shipped tokenizer (the weights' values do not matter)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from actorlearner.base_model import BASE_MODEL_DIR

    tok = AutoTokenizer.from_pretrained(BASE_MODEL_DIR)
    tok.save_pretrained(out)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 8 // 3,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        pad_token_id=tok.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    return out


@app.command()
def main(
    hidden: int = typer.Option(512, help="model width"),
    layers: int = typer.Option(4, help="decoder layers"),
    actors: int = typer.Option(2, help="rollout actors"),
    reps: int = typer.Option(3, help="timed pushes per mode"),
    bucket_mb: float = typer.Option(16.0, help="collective bucket size"),
) -> None:
    import ray

    from actorlearner.learner import LearnerConfig
    from actorlearner.learner.group import LearnerGroup
    from actorlearner.rollout.config import RolloutConfig
    from actorlearner.rollout.group import RolloutGroup

    with tempfile.TemporaryDirectory(prefix="bench_weight_sync_") as tmp:
        model = str(build_model(Path(tmp), hidden, layers))
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        rcfg = RolloutConfig(
            model_path=model,
            num_actors=actors,
            envs_per_actor=1,
            num_cpus_per_actor=0.5,
            engine_kwargs={"dtype": "float32"},
            weight_sync="collective",
            weight_bucket_mb=bucket_mb,
        )
        rollouts = RolloutGroup(rcfg)
        learner = LearnerGroup(LearnerConfig(model=model), 1, 0.5)
        try:
            rollouts.wait_ready()
            size = sum(p.numel() * 4 for p in _params(model)) / 2**20
            times: dict[str, list[float]] = {"collective": [], "object_store": []}
            rollouts.push_weights(learner)  # builds the group (not timed)
            for _ in range(reps):
                t = time.perf_counter()
                rollouts.push_weights(learner)
                times["collective"].append(time.perf_counter() - t)
                t = time.perf_counter()
                rollouts.update_weights(learner.state_dict_for_actors(), learner.version)
                times["object_store"].append(time.perf_counter() - t)
        finally:
            rollouts.shutdown()
            learner.shutdown()
            ray.shutdown()
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"model {size:.0f} MB fp32, {actors} actors, {reps} pushes each, medians:")
    for k, v in med.items():
        print(f"  {k}: {v:.3f} s (all: {', '.join(f'{x:.3f}' for x in times[k])})")
    print(f"object_store / collective = {med['object_store'] / med['collective']:.2f}")


def _params(model: str):
    from transformers import AutoModelForCausalLM

    return list(AutoModelForCausalLM.from_pretrained(model).parameters())


if __name__ == "__main__":
    app()
