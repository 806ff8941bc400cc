"""Paired comparison of two models on the same tasks.

Two pass@1 figures on 60 tasks differ by a few tasks through noise alone; counting the
tasks one model solves more often than the other, and testing that split against a fair
coin (the sign test; McNemar's exact test when each task has one sample), says whether
a difference is more than that. The same holds for two policy versions replaying the
PPO probe's fixed starts, compared start by start with the signed-rank test.
"""

from __future__ import annotations

from statistics import mean
from typing import Any

# metrics["solved_at"][task_id] = [round that solved each sample, or None]
SolvedAt = dict[str, list[int | None]]


def num_solved(samples: list[int | None], rnd: int) -> int:
    """How many of a task's samples were solved by round `rnd`."""
    return sum(s is not None and s <= rnd for s in samples)


def pass_rates(solved_at: SolvedAt, rnd: int) -> dict[str, float]:
    """Per task: the share of its samples solved by round `rnd`."""
    return {t: num_solved(v, rnd) / len(v) for t, v in solved_at.items() if v}


def paired_comparison(before: SolvedAt, after: SolvedAt, rnd: int) -> dict[str, Any]:
    """`after` against `before` on their common tasks: tasks solved more often (gained),
    less often (lost), and the two-sided sign-test p-value of that split."""
    from scipy.stats import binomtest

    a, b = pass_rates(before, rnd), pass_rates(after, rnd)
    common = sorted(a.keys() & b.keys())
    gained = sum(b[t] > a[t] for t in common)
    lost = sum(b[t] < a[t] for t in common)
    p = binomtest(gained, gained + lost, 0.5).pvalue if gained + lost else 1.0
    return {"round": rnd, "tasks": len(common), "gained": gained, "lost": lost, "p_value": p}


def paired_rewards(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Per-task reward change between two probes of the same starts: mean change, tasks up
    and down, and the two-sided Wilcoxon signed-rank p-value (1.0 when nothing changed)."""
    from scipy.stats import wilcoxon

    diffs = [after[t] - before[t] for t in sorted(before.keys() & after.keys())]
    changed = [d for d in diffs if d != 0]
    return {
        "tasks": len(diffs),
        "mean_change": mean(diffs) if diffs else 0.0,
        "up": sum(d > 0 for d in diffs),
        "down": sum(d < 0 for d in diffs),
        "p_value": float(wilcoxon(changed).pvalue) if changed else 1.0,
    }


def compare_stages(results: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Each stage against the one before it (base -> sft -> ppo), per benchmark, after the
    last round both were evaluated for. Benchmarks without per-task outcomes are skipped."""
    out: dict[str, dict[str, Any]] = {}
    stages = list(results)
    for prev, cur in zip(stages, stages[1:], strict=False):
        for bench, m in results[cur].items():
            p = results[prev].get(bench, {})
            if "solved_at" not in m or "solved_at" not in p:
                continue
            rnd = min(len(m["pass@1"]), len(p["pass@1"])) - 1
            comparison = paired_comparison(p["solved_at"], m["solved_at"], rnd)
            out.setdefault(bench, {})[f"{cur}_vs_{prev}"] = comparison
    return out


def paired_lines(paired: dict[str, dict[str, Any]]) -> list[str]:
    """Summary lines: '+gained / -lost of N tasks, p=...' per benchmark and stage pair."""
    lines = []
    for bench in sorted(paired):
        for pair, c in paired[bench].items():
            lines.append(
                f"  {bench:<18} {pair.replace('_vs_', ' vs '):<11} round {c['round']}: "
                f"+{c['gained']} / -{c['lost']} of {c['tasks']} tasks, p={c['p_value']:.2g}"
            )
    if lines:
        lines.insert(
            0, "Paired per task (solved more / less often than the stage before; sign test):"
        )
    return lines
