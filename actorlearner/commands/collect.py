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
            ),
        ] = None,
        out: Annotated[
            str | None,
            Opt("--out", "-o", help="output directory (rerun with the same one to resume)"),
        ] = None,
        config: Annotated[
            str | None, Opt("--config", "-c", help="YAML file with CollectConfig fields")
        ] = None,
        sampler: Annotated[
            str | None, Opt(help="who samples initial solutions: policy | teacher")
        ] = None,
        refiner: Annotated[
            str | None, Opt(help="who explains and refines: teacher | policy | reference")
        ] = None,
        policy: Annotated[str | None, Opt(help="policy model directory (or hub name)")] = None,
        samples: Annotated[
            int | None, Opt("--samples", "-n", help="initial solutions per problem (paper: 20)")
        ] = None,
        refinements: Annotated[
            int | None, Opt("--refinements", "-k", help="replies per wrong solution (paper: 10)")
        ] = None,
        sample_temperature: Annotated[float | None, Opt(help="paper: 1.0")] = None,
        refine_temperature: Annotated[float | None, Opt(help="paper: 0.8")] = None,
        max_problems: Annotated[
            int | None, Opt(help="first N problems of each source (0 = all)")
        ] = None,
        teacher_url: Annotated[
            str | None, Opt(help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
        ] = None,
        teacher_model: Annotated[
            str | None, Opt(help="model name the teacher endpoint serves")
        ] = None,
        teacher_key_env: Annotated[
            str | None, Opt(help="NAME of the environment variable holding the API key")
        ] = None,
        teacher_concurrency: Annotated[
            int | None, Opt(help="teacher requests in flight per worker")
        ] = None,
        workers: Annotated[int | None, Opt(help="Ray workers (0 = in this process)")] = None,
        units_per_worker: Annotated[
            int | None, Opt(help="problems each worker runs at once (raise for a slow teacher)")
        ] = None,
        seed: Annotated[int | None, Opt()] = None,
        timeout: Annotated[float | None, Opt(help="seconds per program execution")] = None,
        overrides: Annotated[
            list[str] | None, typer.Argument(help="extra CollectConfig overrides: key=value")
        ] = None,
        progress: Annotated[bool, Opt("--progress/--no-progress")] = True,
    ):
        """Sample solutions, execute them, ask for explanations + fixes of the wrong ones,
        verify the fixes in the sandbox, and write sft/pool/references/failures JSONL."""
        given = {
            "problems": problems or None,
            "out": out,
            "sampler": sampler,
            "refiner": refiner,
            "policy": policy,
            "samples_per_problem": samples,
            "refinements_per_wrong": refinements,
            "sample_temperature": sample_temperature,
            "refine_temperature": refine_temperature,
            "max_problems": max_problems,
            "num_workers": workers,
            "units_per_worker": units_per_worker,
            "seed": seed,
            "timeout_s": timeout,
            "teacher.base_url": teacher_url,
            "teacher.model": teacher_model,
            "teacher.api_key_env": teacher_key_env,
            "teacher.concurrency": teacher_concurrency,
        }
        cfg = _build_config(
            config, {k: v for k, v in given.items() if v is not None}, overrides or []
        )
        from actorlearner.collect.runner import run_collect
        from actorlearner.teacher import TeacherError

        try:
            run_collect(cfg, show_progress=progress)
        except (ValueError, FileNotFoundError, KeyError, TeacherError) as exc:
            typer.secho(f"collect: {exc}", fg="red", err=True)
            raise typer.Exit(2) from exc


def _build_config(path: str | None, options: dict, overrides: list[str]):
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from actorlearner.collect.config import CollectConfig

    layers = [OmegaConf.structured(CollectConfig)]
    try:
        if path:
            layers.append(OmegaConf.load(path))
        dot = OmegaConf.create()
        for key, value in options.items():
            OmegaConf.update(dot, key, value)
        layers.append(dot)
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise typer.BadParameter(f"overrides must look like key=value, got {bad}")
        layers.append(OmegaConf.from_dotlist(overrides))
        cfg = OmegaConf.to_object(OmegaConf.merge(*layers))
        assert isinstance(cfg, CollectConfig)
    except (OmegaConfBaseException, FileNotFoundError) as exc:
        typer.secho(f"collect: bad config: {exc}".split("\n    full_key")[0], fg="red", err=True)
        raise typer.Exit(2) from exc
    try:
        cfg.validate()
    except ValueError as exc:
        typer.secho(f"collect: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    return cfg
