"""The SFT warm-start loop: bucketed batches, held-out evaluation, resumable checkpoints.

Resuming restores weights, optimizer, scheduler, RNG and the data position (epoch and
batch index; each epoch's batches are a pure function of the seed), so the steps after
a resume are the ones an uninterrupted run would have taken.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from actorlearner.learner.checkpoint import StopFlag, latest_tag
from actorlearner.learner.config import LearnerConfig
from actorlearner.learner.sft import (
    SFTBatch,
    SFTExample,
    collate_sft,
    length_buckets,
    load_examples,
    split_holdout,
)


@dataclass
class SFTData:
    train: list[SFTExample]
    held_out: list[SFTExample]


def load_sft_data(cfg: LearnerConfig, tokenizer) -> SFTData:
    s = cfg.sft
    examples = load_examples(s.data, tokenizer, s.refine_only, s.max_length)
    if s.eval_data:
        held = load_examples(s.eval_data, tokenizer, s.refine_only, s.max_length)
        return SFTData(examples, held)
    train, held = split_holdout(examples, s.eval_fraction, cfg.seed)
    return SFTData(train, held)


def eval_batches(examples: list[SFTExample], pad_id: int, batch_tokens: int) -> list[SFTBatch]:
    order = length_buckets([len(e) for e in examples], batch_tokens, seed=0)
    return [collate_sft([examples[i] for i in b], pad_id) for b in order]


def train_sft(
    learner,
    cfg: LearnerConfig,
    data: SFTData,
    resume: bool = False,
    on_metrics: Callable[[dict[str, float], int], None] | None = None,
) -> dict[str, float]:
    """Run SFT until epochs/max_steps or SIGTERM; returns the last metrics.

    `learner` is a LearnerBackend (a DeepSpeedLearner or a LearnerGroup).
    """
    s = cfg.sft
    ckpt = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
    position = {"epoch": 0, "batch": 0}
    if resume:
        if ckpt is None or latest_tag(ckpt) is None:
            raise FileNotFoundError(f"--resume: no checkpoint in {ckpt!r} (set checkpoint_dir)")
        position = learner.load_checkpoint(ckpt)["data"]
    held = eval_batches(data.held_out, learner.pad_id, s.batch_tokens) if data.held_out else []
    lengths = [len(e) for e in data.train]
    stop = StopFlag()
    metrics: dict[str, float] = {}
    try:
        for epoch in range(position["epoch"], s.epochs):
            batches = length_buckets(lengths, s.batch_tokens, seed=cfg.seed + epoch)
            for b in range(position["batch"] if epoch == position["epoch"] else 0, len(batches)):
                batch = collate_sft([data.train[i] for i in batches[b]], learner.pad_id)
                metrics = {**learner.sft_step(batch), "epoch": float(epoch)}
                position = {"epoch": epoch, "batch": b + 1}
                done = bool(s.max_steps) and learner.step >= s.max_steps
                if held and (learner.step % s.eval_interval == 0 or done):
                    metrics.update(learner.sft_eval(held))
                if on_metrics is not None:
                    on_metrics(metrics, learner.step)
                if ckpt is not None and (learner.should_checkpoint() or stop.requested or done):
                    learner.save_checkpoint(ckpt, extra={"data": position})
                if stop.requested or done:
                    return metrics
    finally:
        stop.restore()
    if held and "eval/loss" not in metrics:
        metrics.update(learner.sft_eval(held))
    if ckpt is not None:
        learner.save_checkpoint(ckpt, extra={"data": {"epoch": s.epochs, "batch": 0}})
    return metrics


def main(
    config: str,
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value")] = None,
    resume: bool = False,
    logdir: str = "",
) -> None:
    """Entry point: `python -m actorlearner.learner.sft_loop LEARNER.yaml [k=v ...] [--resume]`.

    The YAML holds `LearnerConfig` fields, read by the loader every command uses."""
    import torch

    from actorlearner.config import ConfigError, load_structured
    from actorlearner.learner.deepspeed_backend import DeepSpeedLearner

    try:
        cfg = load_structured(LearnerConfig, config, overrides or [])
    except ConfigError as exc:
        typer.secho(f"config error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    torch.manual_seed(cfg.seed)
    learner = DeepSpeedLearner(cfg)
    data = load_sft_data(cfg, learner.tokenizer)
    logger = None
    if logdir:
        from actorlearner.metrics import MetricsLogger

        logger = MetricsLogger(logdir)

    def report(metrics: dict[str, float], step: int) -> None:
        print(f"step {step} loss {metrics['loss/sft']:.10f}", flush=True)
        if logger is not None:
            logger.log(metrics, step)

    train_sft(learner, cfg, data, resume=resume, on_metrics=report)
    if logger is not None:
        logger.close()


if __name__ == "__main__":
    typer.run(main)
