"""Building trusted tests from inputs + reference outputs, shared by every loader."""

from __future__ import annotations

import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from envs.benchmarks.asserts import ConvertedTest
from envs.benchmarks.expected import (
    ReferenceError,
    ReferenceJob,
    ReferenceValues,
    reference_values,
)
from envs.benchmarks.values import from_source, to_source
from sandbox.types import TestCase

DEFAULT_FLOAT_ATOL = 1e-6  # EvalPlus: floats never compare exactly, even when atol is 0


def call_expr(entry_point: str, args: Sequence) -> str:
    return f"{entry_point}({', '.join(to_source(a) for a in args)})"


def is_floats(value) -> bool:
    """A float, or a non-empty list/tuple of floats (EvalPlus's rule for a default atol)."""
    if isinstance(value, float):
        return True
    return (
        isinstance(value, (list, tuple))
        and bool(value)
        and all(isinstance(v, float) for v in value)
    )


def io_test(expr: str, expected, atol: float = 0.0, oracle: str = "eq", call: str = "") -> TestCase:
    """An input/output test with EvalPlus's float rule and a readable assert as display
    (`call`: the expression to show, when `expr` wraps it)."""
    call = call or expr
    if oracle == "find_zero":
        xs = to_source(expected)
        display = f"assert abs(poly({xs}, {call})) <= {atol}"
        return TestCase(expr, expected, atol=atol, oracle=oracle, display=display)
    if atol == 0 and is_floats(expected):
        atol = DEFAULT_FLOAT_ATOL
    shown = _source_or_repr(expected)
    display = f"assert {call} == {shown}"
    if atol:
        display = f"assert math.isclose({call}, {shown}, abs_tol={atol})"
    return TestCase(expr, expected, atol=atol, oracle=oracle, display=display)


def reference_tests(
    key: str, calls: Sequence[str], got: ReferenceValues, atol: float, find_zero: bool = False
) -> list[TestCase]:
    """Input/expected tests from the reference's outputs on `calls` (EvalPlus style).

    An input on which the reference raised (or returned a value the sandbox cannot
    report) has no expected output: it is left out, with one warning per task.
    """
    tests = []
    for i, call in enumerate(calls):
        if i not in got.values:
            continue
        if find_zero:  # HumanEval/32: any root passes; `expected` holds the coefficients
            xs = from_source(call[call.index("(") + 1 : -1])
            tests.append(
                io_test(got.exprs[i], list(xs), atol or 1e-4, oracle="find_zero", call=call)
            )
        else:
            tests.append(io_test(got.exprs[i], got.values[i], atol, call=call))
    if len(tests) < len(calls):
        first = next(iter(got.errors.values()), "no value")
        warnings.warn(
            f"{key}: left out {len(calls) - len(tests)} of {len(calls)} tests on which the "
            f"reference solution fails ({first})",
            stacklevel=2,
        )
    return tests


def _source_or_repr(value) -> str:
    try:
        return to_source(value)
    except TypeError:
        return repr(value)


@dataclass
class PendingProblem:
    """Tests of one problem, some of whose expected values may still need the reference."""

    key: str
    reference: str | None  # the whole program whose values are trusted (None: no run)
    tests: list[ConvertedTest]


def resolve_tests(
    items: Sequence[PendingProblem], cache_file: Path | None, strict: bool = False
) -> list[tuple[list[TestCase], float | None]]:
    """(tests, reference seconds) per item: every test is run against the reference.

    The run times the reference (candidates get a multiple of it), fills each pending
    test's expected value and turns truthy tests into eq tests where it can (see
    `ConvertedTest.value_expr`). A pending test on which the reference raised cannot be
    judged: it is dropped with a warning, or raises `ReferenceError` when `strict`. A
    problem that keeps truthy tests gets a warning: a program can pass those blindly.
    """
    jobs = [
        ReferenceJob(item.key, item.reference, [_reference_expr(t) for t in item.tests])
        for item in items
        if item.reference is not None
    ]
    values = reference_values(jobs, cache_file) if jobs else {}
    out = []
    for item in items:
        got = values.get(item.key)
        tests = [_resolve(item.key, j, t, got, strict) for j, t in enumerate(item.tests)]
        kept = [t for t in tests if t is not None]
        _warn_truthy(item.key, kept)
        out.append((kept, got.seconds if got else None))
    return out


def _reference_expr(t: ConvertedTest) -> str:
    return t.expected_expr or t.value_expr or t.case.expr


def _resolve(
    key: str, j: int, t: ConvertedTest, got: ReferenceValues | None, strict: bool
) -> TestCase | None:
    """Test `j` with its expected value from the reference's values (None: dropped)."""
    value = got.values.get(j, _MISSING) if got is not None else _MISSING
    if t.value_expr is not None:
        if value is _MISSING:
            return t.case  # no reference value: the truthy test stays
        return replace(t.case, expr=got.exprs[j], expected=value, oracle="eq")  # type: ignore[union-attr]
    if not t.pending:
        return t.case
    if value is not _MISSING:
        expr = t.case.expr
        if got.exprs[j] != t.expected_expr:  # type: ignore[union-attr]  # re-run in a plain form
            expr = got.exprs[j].replace(t.expected_expr, expr)  # type: ignore[union-attr,arg-type]
        return replace(t.case, expr=expr, expected=value)
    why = got.errors.get(j, "no value") if got else "no reference solution"
    msg = f"{key}: the reference solution fails on the test {t.case.display!r} ({why})"
    if strict:
        raise ReferenceError(msg)
    warnings.warn(f"dropped a test: {msg}", stacklevel=3)
    return None


_MISSING = object()


def _warn_truthy(key: str, tests: Sequence[TestCase]) -> None:
    n = sum(t.oracle == "truthy" for t in tests)
    if n:
        warnings.warn(
            f"{key}: {n} truthy test(s) (`assert f(x)`): their expression shows which truth "
            "value passes, so a program can pass them without solving the task; give the "
            "problem a reference solution, or write them as `assert f(x) == value`",
            stacklevel=3,
        )


def select(records: Sequence[dict], task_ids: Sequence[str] | None) -> list[dict]:
    if task_ids is None:
        return list(records)
    by_id = {r["task_id"]: r for r in records}
    unknown = [t for t in task_ids if t not in by_id]
    if unknown:
        raise KeyError(f"unknown task ids: {', '.join(unknown[:5])}")
    return [by_id[t] for t in task_ids]


def sample_inputs(record: dict, plus: bool, plus_sample: int | None, seed: int) -> dict:
    extra = record["plus_input"] if plus else []
    if plus_sample is not None and len(extra) > plus_sample:
        keep = sorted(
            random.Random(f"{seed}:{record['task_id']}").sample(range(len(extra)), plus_sample)
        )
        extra = [extra[i] for i in keep]
    return {"base_input": record["base_input"], "plus_input": extra}
