"""`actorlearner pipeline|sft|train|sweep`: run the stages of a config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigOpt = Annotated[
    str, typer.Option("--config", "-c", help="YAML run config (see configs/)", metavar="FILE")
]
Overrides = Annotated[
    list[str] | None,
    typer.Argument(
        help="overrides such as train.iterations=4; the valid keys are the fields of the "
        "config dataclasses in actorlearner/config.py, and --dry-run prints them all",
        metavar="KEY=VALUE",
    ),
]
DryRun = Annotated[
    bool,
    typer.Option("--dry-run", help="print the resolved config and resource plan", metavar=""),
]
Resume = Annotated[
    bool,
    typer.Option("--resume/--no-resume", help="continue an interrupted run", metavar=""),
]


def _load(config: str, overrides: list[str] | None):
    from actorlearner.config import ConfigError, load_config

    try:
        return load_config(config, overrides or [])
    except ConfigError as exc:
        typer.secho(f"config error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc


def _dry_run(cfg) -> None:
    from actorlearner.config import ConfigError, to_yaml
    from actorlearner.pipeline.plan import check_fits, make_plan, planned_resources

    try:
        plan = make_plan(cfg)
    except ConfigError as exc:
        typer.secho(f"config error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    typer.echo(to_yaml(cfg))
    typer.echo("# reward terms (train.rewards, presets expanded)\n" + reward_lines(cfg))
    typer.echo("# resource plan\n" + plan.describe(cfg))
    typer.echo(f"# stages: {' -> '.join(cfg.stages)}; output: {cfg.run_dir}")
    try:  # against the cluster the run would use, as the run itself checks first
        check_fits(plan, planned_resources(cfg))
    except ConfigError as exc:
        typer.secho(f"config error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc


def reward_lines(cfg) -> str:
    """One line per reward term: index (for `train.rewards.<i>.weight=`), name, weight."""
    lines = []
    for i, term in enumerate(cfg.train.rewards):
        extra = {k: v for k, v in term.items() if k not in ("name", "weight")}
        lines.append(f"{i}: {term['name']} x {term.get('weight', 1.0):g}  {extra or ''}".rstrip())
    return "\n".join(lines)


def _run(cfg, stages: list[str] | None, resume: bool) -> None:
    from actorlearner.config import ConfigError
    from actorlearner.pipeline.run import run_pipeline

    try:
        run_pipeline(cfg, stages=stages, resume=resume)
    except ConfigError as exc:
        typer.secho(f"config error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc


def register(app: typer.Typer) -> None:
    @app.command()
    def pipeline(
        config: ConfigOpt,
        overrides: Overrides = None,
        dry_run: DryRun = False,
        resume: Resume = True,
    ):
        """Run collect -> sft -> train (PPO) -> evaluate as the config says."""
        cfg = _load(config, overrides)
        _dry_run(cfg) if dry_run else _run(cfg, None, resume)

    def _stage_command(stage: str, doc: str) -> None:
        def command(
            config: ConfigOpt,
            overrides: Overrides = None,
            dry_run: DryRun = False,
            resume: Resume = True,
        ):
            cfg = _load(config, overrides)
            _dry_run(cfg) if dry_run else _run(cfg, [stage], resume)

        command.__doc__ = doc
        app.command(name=stage)(command)

    _stage_command("sft", "Supervised warm-start on collected explain-then-refine data.")
    _stage_command("train", "PPO with Ray rollout actors and a DeepSpeed learner.")
    register_sweep(app)


def register_sweep(app: typer.Typer) -> None:
    @app.command()
    def sweep(
        config: ConfigOpt,
        param: Annotated[
            list[str],
            typer.Option(
                "--param", "-p", help="a key and its values (repeatable)", metavar="KEY=V1,V2"
            ),
        ],
        overrides: Overrides = None,
        name: Annotated[
            str, typer.Option(help="sweep name (runs/<name>/...)", metavar="NAME")
        ] = "sweep",
    ):
        """Grid sweep over any config key, each trial a whole run, then a results table.

        Reward weights: train.rewards.1.weight, refinement depth: train.max_turns /
        evaluate.rounds, learning rate, ...
        """
        import json

        from actorlearner.config import ConfigError
        from actorlearner.pipeline.sweep import results_table, run_sweep

        try:
            results = run_sweep(config, param, overrides or [], name)
        except ConfigError as exc:
            typer.secho(f"config error: {exc}", fg="red", err=True)
            raise typer.Exit(2) from exc
        out = Path("runs") / name
        out.mkdir(parents=True, exist_ok=True)
        (out / "sweep.json").write_text(json.dumps([r.__dict__ for r in results], indent=2))
        (out / "sweep.txt").write_text(results_table(results))
