"""Which benchmark task each sample is for, refusing samples made for another benchmark.

A sample file scored against the wrong benchmark must fail loudly, not score 0% (or
worse, a plausible number) against unrelated tasks. Task ids match exactly; a bare
number (`11`) is accepted only where the benchmark's own data names tasks by bare
numbers (MBPP, whose `Mbpp/11` is task 11), never given another benchmark's prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from envs.problem import Problem

BARE_NUMBER_PREFIXES = ("Mbpp",)  # benchmarks whose original task ids are bare numbers
SHOWN = 5  # ids named in a message


class SampleMismatchError(ValueError):
    """Samples name tasks the benchmark does not have (the message names ids and benchmark)."""


@dataclass
class Match:
    """`problems[i]`: the problem of sample i; `missing`: benchmark tasks with no sample."""

    problems: dict[int, Problem]
    missing: list[str]


def match_samples(
    problems: Sequence[Problem], samples: Sequence[dict], benchmark: str = "the benchmark"
) -> Match:
    """Each sample's problem; raises `SampleMismatchError` if any task id is not there."""
    by_id = {p.task_id: p for p in problems}
    prefix = _bare_number_prefix(problems)
    matched, unknown = {}, []
    for i, sample in enumerate(samples):
        key = str(sample["task_id"])
        if key not in by_id and prefix and key.isdigit():
            key = f"{prefix}/{int(key)}"
        if key in by_id:
            matched[i] = by_id[key]
        else:
            unknown.append(str(sample["task_id"]))
    if unknown:
        raise SampleMismatchError(_mismatch_message(unknown, len(samples), problems, benchmark))
    seen = {p.task_id for p in matched.values()}
    return Match(matched, [p.task_id for p in problems if p.task_id not in seen])


def _bare_number_prefix(problems: Sequence[Problem]) -> str | None:
    prefixes = {p.task_id.rsplit("/", 1)[0] for p in problems if "/" in p.task_id}
    if len(prefixes) == 1 and (prefix := prefixes.pop()) in BARE_NUMBER_PREFIXES:
        return prefix
    return None


def _mismatch_message(
    unknown: list[str], num_samples: int, problems: Sequence[Problem], benchmark: str
) -> str:
    ids = sorted(set(unknown), key=_natural)
    shown = ", ".join(ids[:SHOWN]) + (f" and {len(ids) - SHOWN} more" if len(ids) > SHOWN else "")
    if len(unknown) == num_samples:
        scope = f"none of the {num_samples} samples' task ids is in {benchmark}"
    else:
        verb = "is" if len(unknown) == 1 else "are"
        scope = f"{len(unknown)} of the {num_samples} samples' task ids {verb} not in {benchmark}"
    example = problems[0].task_id if problems else "?"
    hint = f"its task ids look like {example!r}"
    if all(i.isdigit() for i in ids):
        hint += "; bare numbers are MBPP task ids (use --benchmark mbpp or mbpp+)"
    return f"{scope} ({shown}): {hint}; score samples against the benchmark they were generated for"


def _natural(task_id: str) -> tuple[str, int]:
    head, _, tail = task_id.rpartition("/")
    return (head, int(tail)) if tail.isdigit() else (task_id, -1)
