"""`actorlearner evaluate`: pass@k of a samples file on HumanEval, MBPP, HumanEval+, MBPP+."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

# The benchmark names and the problem set each one means (MBPP: its 500-task test split).
BENCHMARKS = {
    "humaneval": "humaneval",
    "humaneval+": "humaneval+",
    "mbpp": "mbpp:test",
    "mbpp+": "mbpp+",
    "mbpp_sanitized": "mbpp_sanitized:test",
}


def parse_ks(text: str) -> list[int]:
    try:
        ks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise typer.BadParameter(
            f"--k takes comma-separated positive integers such as 1,10 (got {text!r})"
        ) from None
    if not ks or ks[0] < 1:
        raise typer.BadParameter(
            f"--k takes comma-separated positive integers such as 1,10 (got {text!r})"
        )
    return ks


def problem_spec(benchmark: str) -> str:
    """A benchmark name, a `name:split` spec, or a generic-format JSONL path."""
    if benchmark in BENCHMARKS:
        return BENCHMARKS[benchmark]
    if ":" in benchmark or Path(benchmark).suffix in (".jsonl", ".gz"):
        return benchmark
    raise typer.BadParameter(
        f"unknown benchmark {benchmark!r}; use one of {', '.join(BENCHMARKS)}, a spec such as "
        "mbpp:validation, or a problems JSONL file"
    )


def register(app: typer.Typer) -> None:
    @app.command()
    def evaluate(
        benchmark: Annotated[
            str, typer.Option("--benchmark", "-b", help=f"one of {', '.join(BENCHMARKS)}")
        ],
        out: Annotated[
            Path, typer.Option("--out", "-o", help="results JSONL (one line per sample)")
        ],
        samples: Annotated[
            Path | None,
            typer.Option("--samples", "-s", help="JSONL: task_id + completion or solution"),
        ] = None,
        canonical: Annotated[
            bool, typer.Option("--canonical", help="score the benchmark's own reference solutions")
        ] = False,
        k: Annotated[str, typer.Option("--k", help="pass@k values, comma-separated")] = "1,10",
        timeout: Annotated[
            float, typer.Option("--timeout", help="seconds per program (at least)")
        ] = 6.0,
        metrics_out: Annotated[
            Path | None, typer.Option("--metrics", help="metrics JSON (default: next to --out)")
        ] = None,
        model: Annotated[
            str | None, typer.Option("--model", "-m", help="model dir or hub name: depth benchmark")
        ] = None,
        rounds: Annotated[int, typer.Option(help="refinement rounds (with --model)")] = 3,
        samples_per_task: Annotated[int, typer.Option(help="samples per task (with --model)")] = 1,
        temperature: Annotated[float, typer.Option(help="0 = greedy (with --model)")] = 0.0,
        max_new_tokens: Annotated[int, typer.Option(help="tokens per reply (with --model)")] = 256,
        engine: Annotated[str, typer.Option(help="hf | vllm (with --model)")] = "hf",
        max_problems: Annotated[int, typer.Option(help="first N problems only; 0 = all")] = 0,
        judge_url: Annotated[
            str, typer.Option(help="OpenAI-compatible URL of an explanation judge (optional)")
        ] = "",
        judge_model: Annotated[str, typer.Option(help="the judge's model name")] = "judge",
    ):
        """Score samples in the sandbox and print pass@k (base and plus for HumanEval+/MBPP+);
        with --model, run the refinement-depth benchmark: generate, then explain-and-refine
        failing programs for --rounds rounds, reporting pass@k after each round."""
        spec = problem_spec(benchmark)
        if model is not None:
            if samples is not None or canonical:
                raise typer.BadParameter(
                    "--model generates its own samples: drop --samples/--canonical"
                )
            run_depth(
                model,
                spec,
                out,
                rounds,
                samples_per_task,
                temperature,
                max_new_tokens,
                engine,
                max_problems,
                judge_url,
                judge_model,
            )
            return
        ks = parse_ks(k)
        if (samples is None) == (not canonical):
            raise typer.BadParameter("give --samples FILE, --canonical, or --model PATH")
        run_evaluate(spec, samples, out, ks, timeout, metrics_out, canonical)


def run_evaluate(
    spec: str,
    samples_path: Path | None,
    out: Path,
    ks: list[int],
    timeout: float = 6.0,
    metrics_out: Path | None = None,
    canonical: bool = False,
) -> dict:
    """Load problems and samples, score them, write results and metrics, print a table."""
    from dataclasses import replace

    from rich.console import Console

    from actorlearner.evaluation import SampleFormatError, read_samples
    from actorlearner.evaluation.evaluate import DEFAULT_LIMITS
    from envs.sources import load_problems

    console = Console(stderr=True)
    with console.status(f"loading {spec} (the first load computes expected outputs; cached after)"):
        problems = load_problems(spec)
    if canonical:
        samples = [{"task_id": p.task_id, "solution": p.reference} for p in problems if p.reference]
    else:
        try:
            samples = read_samples(samples_path)  # type: ignore[arg-type]
        except (SampleFormatError, FileNotFoundError) as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from exc
    limits = replace(DEFAULT_LIMITS, timeout_s=timeout, cpu_s=max(1, int(timeout + 0.999)))
    results, metrics = _score(problems, samples, ks, limits, console)
    metrics["benchmark"] = spec
    _write(out, results, metrics_out or out.with_suffix(".metrics.json"), metrics)
    _report(console, metrics, out)
    return metrics


def _score(problems, samples, ks, limits, console):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from actorlearner.evaluation import evaluate_samples

    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("running programs", total=None)
        results, metrics = evaluate_samples(
            problems,
            samples,
            k=ks,
            limits=limits,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    return results, metrics


def _write(out: Path, results: list[dict], metrics_path: Path, metrics: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for row in results:
            f.write(json.dumps(row, default=repr) + "\n")
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")


def _report(console, metrics: dict, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    counts = f"{metrics['num_tasks']} tasks, {metrics['num_samples']} samples"
    table = Table(title=metrics["benchmark"], caption=counts)
    parts = list(metrics["pass@k"])
    table.add_column("metric")
    for part in parts:
        table.add_column("base" if part == "base" else "base + extra (plus)", justify="right")
    for key in metrics["pass@k"]["base"]:
        table.add_row(key, *(f"{100 * metrics['pass@k'][p][key]:.1f}%" for p in parts))
    Console().print(table)  # the table goes to stdout, messages to stderr
    console.print(f"statuses: {metrics['status_counts']}; results in {out}")
    if metrics["skipped_k"]:
        console.print(
            f"[yellow]pass@k skipped for k={metrics['skipped_k']}: some tasks have fewer samples[/yellow]"
        )
    if metrics["unknown_task_ids"]:
        ids = metrics["unknown_task_ids"]
        console.print(
            f"[red]{len(ids)} unknown task id(s), not scored (status 'error' in the results): "
            f"{', '.join(ids[:10])}{' ...' if len(ids) > 10 else ''}[/red]"
        )


def run_depth(
    model: str,
    spec: str,
    out: Path,
    rounds: int,
    samples_per_task: int,
    temperature: float,
    max_new_tokens: int,
    engine: str,
    max_problems: int,
    judge_url: str,
    judge_model: str,
) -> dict:
    """The refinement-depth benchmark of one model: JSON results, a table and a plot."""
    from actorlearner.models import check_model_path
    from actorlearner.pipeline.depth import evaluate_model
    from actorlearner.pipeline.report import plot_depth, print_table, write_json_atomic
    from actorlearner.teacher import TeacherConfig

    try:
        check_model_path(model)
    except (FileNotFoundError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    judge = TeacherConfig(base_url=judge_url, model=judge_model) if judge_url else None
    results = evaluate_model(
        model,
        [spec],
        rounds,
        samples_per_task,
        temperature,
        max_new_tokens,
        engine,
        max_problems,
        judge,
    )
    table = {Path(model).name or model: results}
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, {"model": model, "results": results})
    plot_depth(table, out.with_suffix(".png"))
    print_table(table)
    return results
