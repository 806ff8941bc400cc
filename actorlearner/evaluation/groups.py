"""pass@1 per round within groups of tasks (HumanEvalFix's bug types, a user's own tags).

A single pass@1 hides which kinds of bug a model repairs; the per-group rows show it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

from actorlearner.pipeline.paired import pass_rates
from envs.problem import Problem

GroupRows = dict[str, dict]  # group -> {"num_tasks": n, "pass@1": [round 0, round 1, ...]}


def task_groups(problems: Sequence[Problem], key: str = "bug_type") -> dict[str, str]:
    """task id -> the value of `metadata[key]`, for the problems that carry it."""
    return {p.task_id: str(p.metadata[key]) for p in problems if key in p.metadata}


def pass1_by_group(
    solved_at: Mapping[str, list[int | None]], groups: Mapping[str, str], rounds: int
) -> GroupRows:
    """Mean per-task pass rate (pass@1) of each group after each round 0..`rounds`."""
    members: dict[str, list[str]] = defaultdict(list)
    for task_id in solved_at:
        if task_id in groups:
            members[groups[task_id]].append(task_id)
    rows: GroupRows = {}
    for group in sorted(members):
        tasks = {t: list(solved_at[t]) for t in members[group]}
        curve = [sum(pass_rates(tasks, r).values()) / len(tasks) for r in range(rounds + 1)]
        rows[group] = {"num_tasks": len(tasks), "pass@1": curve}
    return rows


def sample_pass1_by_group(
    problems: Sequence[Problem], samples: Sequence[dict], results: Sequence[dict]
) -> GroupRows:
    """pass@1 of scored samples within each group (bug type), one column: no rounds."""
    from actorlearner.evaluation.matching import match_samples

    groups = task_groups(problems)
    solved_at: dict[str, list[int | None]] = defaultdict(list)
    for i, problem in match_samples(problems, samples).problems.items():
        solved_at[problem.task_id].append(0 if results[i]["passed"] else None)
    return pass1_by_group(solved_at, groups, rounds=0)
