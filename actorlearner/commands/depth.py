"""`actorlearner evaluate --model`: the refinement-depth benchmark of one model, with
its table per round (and per bug type where problems carry one), JSON and plot."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from actorlearner.commands.usage import UsageError, load_benchmark

ENGINES = ("hf", "vllm")


@dataclass
class DepthOptions:
    """How the depth benchmark samples (the generation settings in one place)."""

    rounds: int = 3
    samples_per_task: int = 1
    temperature: float = 0.0
    max_new_tokens: int = 256
    engine: str = "hf"

    def check(self) -> None:
        """Refuse settings that would run but mean nothing (a UsageError names the option)."""
        if self.engine not in ENGINES:
            raise UsageError(f"--engine takes one of {', '.join(ENGINES)} (got {self.engine!r})")
        for option, value, low in (
            ("--rounds", self.rounds, 0),
            ("--samples-per-task", self.samples_per_task, 1),
            ("--max-new-tokens", self.max_new_tokens, 1),
        ):
            if value < low:
                raise UsageError(f"{option} takes an integer of at least {low} (got {value})")
        if self.temperature < 0:
            raise UsageError(f"--temperature takes 0 (greedy) or more (got {self.temperature})")


def resolve_model(model: str) -> str:
    """`base` -> the shipped base model; a local path must be a model directory."""
    from actorlearner.models import check_model_path
    from actorlearner.pipeline.run import resolve_model_path

    path = resolve_model_path(model)
    try:
        return check_model_path(path)
    except FileNotFoundError as exc:
        if not Path(path).expanduser().exists():
            raise UsageError(
                f"model directory {path!r} does not exist; use --model base for the shipped "
                "base model, a run's models/sft or models/ppo directory, or a hub name"
            ) from None
        raise UsageError(str(exc)) from None


def run_depth(
    model: str,
    spec: str,
    out: Path,
    depth: DepthOptions | None = None,
    max_problems: int = 0,
    judge_url: str = "",
    judge_model: str = "judge",
) -> dict:
    """The refinement-depth benchmark of one model: JSON results, tables and a plot."""
    from actorlearner.evaluation.groups import pass1_by_group, task_groups
    from actorlearner.pipeline.depth import evaluate_model
    from actorlearner.pipeline.report import (
        plot_depth,
        print_groups,
        print_table,
        write_json_atomic,
    )
    from actorlearner.teacher import TeacherConfig

    depth = depth or DepthOptions()
    path = resolve_model(model)
    problems = load_benchmark(spec, max_problems)  # bad input fails here, before any model
    judge = TeacherConfig(base_url=judge_url, model=judge_model) if judge_url else None
    name = "base" if model == "base" else (Path(model).name or model)
    metrics = evaluate_model(
        path,
        [spec],
        depth.rounds,
        samples_per_task=depth.samples_per_task,
        temperature=depth.temperature,
        max_new_tokens=depth.max_new_tokens,
        engine_kind=depth.engine,
        max_problems=max_problems,
        judge=judge,
        name=name,
    )[spec]
    groups = task_groups(problems)
    if groups:
        metrics["by_bug_type"] = pass1_by_group(metrics["solved_at"], groups, depth.rounds)
    table = {name: {spec: metrics}}
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, {"model": model, "path": path, "results": {spec: metrics}})
    plot_depth(table, out.with_suffix(".png"))
    print_table(table)
    if groups:
        print_groups({name: metrics["by_bug_type"]}, f"{spec}: pass@1 per bug type and round")
    return metrics
