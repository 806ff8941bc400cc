"""Pretrain the embedded base model on local Python source plus synthetic copy tasks.

    python scripts/train_base_model.py --out base_model_work --max-minutes 95
    python scripts/train_base_model.py --out base_model_work --resume          # after a kill
    python scripts/train_base_model.py --out base_model_work --export-only     # ship it

Runs on one CPU thread by default, checkpoints every few minutes and resumes exactly.
"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(add_completion=False)


@app.command()
def main(
    out: Path = typer.Option(Path("base_model_work"), help="Work dir: data, checkpoint, log."),
    max_minutes: float = typer.Option(95.0, help="Wall-clock training budget (all resumes)."),
    max_steps: int = typer.Option(1_000_000, help="Step budget (whichever ends first)."),
    resume: bool = typer.Option(False, help="Continue from the checkpoint in --out."),
    export_only: bool = typer.Option(False, help="Only export the checkpoint in --out."),
    export_to: Path = typer.Option(None, help="Artifact dir (default: the shipped one)."),
    evaluate: bool = typer.Option(True, help="Measure abilities for the model card on export."),
    threads: int = typer.Option(1, help="torch threads (the machine is shared)."),
    seq_len: int = typer.Option(512),
    batch_size: int = typer.Option(4),
    lr: float = typer.Option(1.5e-3),
    warmup_steps: int = typer.Option(50),
    hidden_size: int = typer.Option(256),
    num_layers: int = typer.Option(6),
    copy_fraction: float = typer.Option(0.5, help="Share of rows that are chat copy tasks."),
    late_phase_step: int = typer.Option(None, help="Step from which copy tasks dominate."),
    late_copy_fraction: float = typer.Option(0.85, help="Copy-task share in the late phase."),
    seed: int = typer.Option(0),
    init_from: Path = typer.Option(
        None, help="Continue pretraining from this run's weights (new optimizer and schedule)."
    ),
    reply_loss_only: bool = typer.Option(
        False, help="Score only the assistant replies of copy-task rows."
    ),
    decay_fraction: float = typer.Option(0.25, help="Share of the time budget spent decaying."),
    natural_name_share: float = typer.Option(
        0.0, help="Share of copy tasks with natural (real or original) names."
    ),
) -> None:
    from actorlearner.base_model import BASE_MODEL_DIR
    from actorlearner.base_model.export import export_checkpoint
    from actorlearner.base_model.model import ModelConfig
    from actorlearner.base_model.train import TrainConfig, train

    cfg = TrainConfig(
        out=str(out),
        max_minutes=max_minutes,
        max_steps=max_steps,
        threads=threads,
        seq_len=seq_len,
        batch_size=batch_size,
        lr=lr,
        warmup_steps=warmup_steps,
        copy_fraction=copy_fraction,
        late_phase_step=late_phase_step,
        late_copy_fraction=late_copy_fraction,
        seed=seed,
        init_from=str(init_from) if init_from else None,
        reply_loss_only=reply_loss_only,
        decay_fraction=decay_fraction,
        natural_name_share=natural_name_share,
        model=ModelConfig(hidden_size=hidden_size, num_layers=num_layers),
    )
    if not export_only:
        state = train(cfg, resume=resume)
        typer.echo(
            f"trained: step={state['step']} tokens={state['tokens']} loss={state['loss']:.3f}"
        )
    target = export_to or BASE_MODEL_DIR
    export_checkpoint(out, target, evaluate=evaluate)
    typer.echo(f"exported to {target}")


if __name__ == "__main__":
    app()
