"""HumanEvalFix (HumanEvalPack, Python; OctoPack, ICLR 2024) as `Problem`s.

The 164 HumanEval problems, each with a human-written buggy solution and its bug type.
An episode starts from the buggy program (`metadata["initial_code"]`), so the
refinement-depth benchmark on this source measures repairing real bugs rather than a
model's own first attempt. Round 0 scores the buggy programs: every one fails.

Tests are the dataset's own `check` asserts, converted as for HumanEval. Six checks
are loops or random inputs (tasks 32, 38, 44, 50, 53, 151): as for HumanEval, their
tests are HumanEval+'s `base_input` with expected values from the canonical solution
(task 129's bare `print` line carries no test).
"""

from __future__ import annotations

from collections.abc import Sequence

from envs.benchmarks.common import select
from envs.benchmarks.data import read_records
from envs.benchmarks.humaneval import check_tests
from envs.problem import Problem
from envs.sources import register_source

NAME = "humanevalfix"


def humaneval_id(record: dict) -> str:
    """`Python/7` -> `HumanEval/7` (the same problem in HumanEval and HumanEval+)."""
    return "HumanEval/" + record["task_id"].rsplit("/", 1)[1]


@register_source(NAME)
def load_humanevalfix(
    split: str | None = None, task_ids: Sequence[str] | None = None
) -> list[Problem]:
    """The 164 HumanEvalFix problems (task ids `Python/N`; one split: None or "test")."""
    if split not in (None, "test"):
        raise ValueError(f"{NAME} has one split, 'test' (got {split!r}); use '{NAME}'")
    records = select(read_records(NAME), task_ids)
    return [_problem(r, tests, meta) for r, tests, meta in check_tests(NAME, records, humaneval_id)]


def _problem(record: dict, tests: list, metadata: dict) -> Problem:
    prompt = record["prompt"]
    return Problem(
        task_id=record["task_id"],
        prompt=prompt,
        entry_point=record["entry_point"],
        tests=list(tests),
        source=NAME,
        reference=prompt + record["canonical_solution"],
        completion_prefix=prompt,
        metadata={
            **metadata,
            "initial_code": prompt + record["buggy_solution"],
            "bug_type": record["bug_type"],
            "failure_symptoms": record["failure_symptoms"],
        },
    )
