"""`actorlearner collect`: build the SFT set, the RL pool and the references (LeDex data)."""

from __future__ import annotations

from typing import Annotated

import typer

Opt = typer.Option


def register(app: typer.Typer) -> None:
    @app.command()
    def collect(
        problems: Annotated[
            list[str] | None,
            Opt(
                "--problems",
                "-p",
                help="problem source spec (repeatable), e.g. mbpp:train, synthetic:train, or a JSONL path",
                metavar="SPEC|FILE",
            ),
        ] = None,
        out: Annotated[
            str | None,
            Opt(
                "--out",
                "-o",
                help="output directory (rerun with the same one to resume)",
                metavar="DIR",
            ),
        ] = None,
        config: Annotated[
            str | None,
            Opt(
                "--config",
                "-c",
                help="YAML run config (its data, model, collect, ray)",
                metavar="FILE",
            ),
        ] = None,
        sampler: Annotated[
            str | None, Opt(help="who samples initial solutions", metavar="policy|teacher")
        ] = None,
        refiner: Annotated[
            str | None, Opt(help="who explains and refines", metavar="teacher|policy|reference")
        ] = None,
        policy: Annotated[
            str | None, Opt(help="policy model directory (or hub name)", metavar="DIR")
        ] = None,
        samples: Annotated[
            int | None,
            Opt("--samples", "-n", help="initial solutions per problem (paper: 20)", metavar="N"),
        ] = None,
        refinements: Annotated[
            int | None,
            Opt("--refinements", "-k", help="replies per wrong solution (paper: 10)", metavar="K"),
        ] = None,
        sample_temperature: Annotated[float | None, Opt(help="paper: 1.0", metavar="T")] = None,
        refine_temperature: Annotated[float | None, Opt(help="paper: 0.8", metavar="T")] = None,
        max_problems: Annotated[
            int | None, Opt(help="first N problems of each source (0 = all)", metavar="N")
        ] = None,
        teacher_url: Annotated[
            str | None,
            Opt(help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1", metavar="URL"),
        ] = None,
        teacher_model: Annotated[
            str | None, Opt(help="model name the teacher endpoint serves", metavar="NAME")
        ] = None,
        teacher_key_env: Annotated[
            str | None, Opt(help="the environment variable holding the API key", metavar="NAME")
        ] = None,
        teacher_concurrency: Annotated[
            int | None, Opt(help="teacher requests in flight per worker", metavar="N")
        ] = None,
        workers: Annotated[
            int | None, Opt(help="Ray workers (0 = in this process)", metavar="N")
        ] = None,
        units_per_worker: Annotated[
            int | None,
            Opt(help="problems each worker runs at once (raise for a slow teacher)", metavar="N"),
        ] = None,
        seed: Annotated[int | None, Opt(help="run seed", metavar="N")] = None,
        timeout: Annotated[
            float | None, Opt(help="seconds per program execution", metavar="SECONDS")
        ] = None,
        overrides: Annotated[
            list[str] | None,
            typer.Argument(
                help="run-config overrides, e.g. collect.teacher.max_retries=1",
                metavar="KEY=VALUE",
            ),
        ] = None,
        progress: Annotated[
            bool, Opt("--progress/--no-progress", help="show progress bars", metavar="")
        ] = True,
    ):
        """Build the SFT data, the RL pool and the references (LeDex data collection).

        Sample solutions, execute them, ask for explanations + fixes of the wrong ones,
        verify the fixes in the sandbox, and write sft/pool/references/failures JSONL.
        """
        given = {
            "data.train": problems or None,
            "collect.sampler": sampler,
            "collect.refiner": refiner,
            "model.path": policy,
            "collect.samples_per_problem": samples,
            "collect.refinements_per_wrong": refinements,
            "collect.sample_temperature": sample_temperature,
            "collect.refine_temperature": refine_temperature,
            "data.max_problems_per_source": max_problems,
            "collect.num_workers": workers,
            "collect.units_per_worker": units_per_worker,
            "seed": seed,
            "collect.timeout_s": timeout,
            "collect.teacher.base_url": teacher_url,
            "collect.teacher.model": teacher_model,
            "collect.teacher.api_key_env": teacher_key_env,
            "collect.teacher.concurrency": teacher_concurrency,
        }
        flags = [f"{k}={_yaml(v)}" for k, v in given.items() if v is not None]
        cfg = _build_config(config, [*flags, *(overrides or [])], out)
        from actorlearner.collect.runner import run_collect
        from actorlearner.teacher import TeacherError

        try:
            run_collect(cfg, show_progress=progress)
        except (ValueError, FileNotFoundError, KeyError, TeacherError) as exc:
            typer.secho(f"collect: {exc}", fg="red", err=True)
            raise typer.Exit(2) from exc


def _yaml(value: object) -> str:
    """A flag's value as an override's YAML (lists as flow sequences, strings quoted)."""
    import json

    return json.dumps(value) if isinstance(value, (list, str)) else str(value)


def _build_config(path: str | None, overrides: list[str], out: str | None):
    """The run config (the same loader as every command), then its collection."""
    from actorlearner.collect.config import from_run_config
    from actorlearner.config import ConfigError, load_config
    from actorlearner.pipeline.run import resolve_model_path

    try:
        run = load_config(path, overrides)
    except ConfigError as exc:
        typer.secho(f"config error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    target = out or str(run.run_dir / "data")
    cfg = from_run_config(run, target, resolve_model_path(run.model.path))
    try:
        cfg.validate()
    except ValueError as exc:
        typer.secho(f"collect: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    return cfg
