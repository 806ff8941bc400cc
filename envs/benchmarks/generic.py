"""Users' own problems: one JSON object per line (plain or gzipped JSONL).

    {"task_id": "add", "prompt": "Write add(a, b).", "entry_point": "add",
     "tests": ["assert add(1, 2) == 3", {"input": [2, 2], "output": 4},
               {"input": "add(-1, 1)", "output": 0, "atol": 0}],
     "reference": "def add(a, b):\n    return a + b",      # optional
     "initial_code": "def add(a, b):\n    return a - b",   # optional: a buggy start
     "setup_code": "import math"}                           # optional

Tests are assert statements (converted to trusted input/expected tests, see
`asserts.py`) or input/output pairs: `input` is a list of arguments or a call
expression, `output` the JSON value expected (JSON has no tuples: compare tuple
results with an assert such as `assert f(x) == (1, 2)`). `initial_code` is the program
a refinement episode starts from (a buggy solution, as in HumanEvalFix): with it,
`evaluate --model M --benchmark FILE` measures repairing your own bugs, and
`CodeRefine-v0` starts its episodes there. Optional keys: `plus_tests` (same forms),
`completion_prefix`, `source`, `metadata`; other keys (a `bug_type`, say, which the
depth benchmark reports by) go to `metadata`.
An assert that compares against an expression rather than a literal needs
`reference`, which is run in the sandbox to compute the expected value.
"""

from __future__ import annotations

import json
from pathlib import Path

from envs.benchmarks.asserts import AssertConversionError, ConvertedTest, convert_assert
from envs.benchmarks.common import PendingProblem, call_expr, resolve_tests
from envs.benchmarks.expected import cache_path
from envs.jsonl import numbered_lines
from envs.problem import Problem
from sandbox.types import TestCase

REQUIRED = {"task_id": str, "prompt": str, "entry_point": str, "tests": list}
OPTIONAL = {
    "reference": str,
    "initial_code": str,
    "setup_code": str,
    "plus_tests": list,
    "completion_prefix": str,
    "source": str,
    "metadata": dict,
}


class GenericFormatError(ValueError):
    """A line of a generic problem file is malformed (the message names file and line)."""


def load_generic_jsonl(path: str | Path) -> list[Problem]:
    """Problems from a generic-format JSONL file (see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        raise GenericFormatError(f"{path} is a directory; give a problems JSONL file")
    if not path.is_file():
        raise FileNotFoundError(f"problem file not found: {path}")
    rows: list[tuple[int, dict]] = []
    seen: dict[str, int] = {}
    for lineno, line in numbered_lines(path):
        row = _parse_line(line, path, lineno)
        if row["task_id"] in seen:
            raise GenericFormatError(
                f"{path}:{lineno}: duplicate task_id {row['task_id']!r} (first on line {seen[row['task_id']]})"
            )
        seen[row["task_id"]] = lineno
        rows.append((lineno, row))
    return _build(path, rows)


def _parse_line(line: str, path: Path, lineno: int) -> dict:
    where = f"{path}:{lineno}"
    try:
        row = json.loads(line.rstrip("\r\n"))  # a newline would shift the error column
    except json.JSONDecodeError as exc:
        raise GenericFormatError(
            f"{where}: not valid JSON ({exc.msg} at column {exc.colno})"
        ) from None
    if not isinstance(row, dict):
        raise GenericFormatError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for key in REQUIRED:
        if key not in row:
            raise GenericFormatError(
                f"{where}: missing required key {key!r} (required: {', '.join(REQUIRED)})"
            )
    for key, typ in {**REQUIRED, **OPTIONAL}.items():
        if key in row and not isinstance(row[key], typ):
            raise GenericFormatError(
                f"{where}: {key!r} must be a {typ.__name__}, got {type(row[key]).__name__}"
            )
    if not row["entry_point"].isidentifier():
        raise GenericFormatError(
            f"{where}: entry_point {row['entry_point']!r} is not a Python identifier"
        )
    if not row["tests"]:
        raise GenericFormatError(f"{where}: 'tests' is empty; give at least one test")
    row["_tests"] = [
        _parse_test(t, row, f"{where}: tests[{i}]") for i, t in enumerate(row["tests"])
    ]
    row["_plus"] = [
        _parse_test(t, row, f"{where}: plus_tests[{i}]")
        for i, t in enumerate(row.get("plus_tests", []))
    ]
    pending = [t for t in row["_tests"] + row["_plus"] if t.pending]
    if pending and "reference" not in row:
        raise GenericFormatError(
            f"{where}: the test {pending[0].case.display!r} compares against an expression, not a "
            "literal; add a 'reference' solution (its value becomes the expected one) or use a literal"
        )
    return row


def _parse_test(test, row: dict, where: str) -> ConvertedTest:
    entry = row["entry_point"]
    if isinstance(test, str):
        try:
            return convert_assert(test, candidate=entry)
        except AssertConversionError as exc:
            raise GenericFormatError(f"{where}: {exc}") from None
    if not isinstance(test, dict) or "input" not in test or "output" not in test:
        raise GenericFormatError(
            f"{where}: a test is an assert string or an object with 'input' and 'output', got {test!r:.80}"
        )
    inp, atol = test["input"], test.get("atol", 0.0)
    if isinstance(inp, list):
        expr = call_expr(entry, inp)
    elif isinstance(inp, str):
        expr = inp
        try:
            compile(expr, "<test>", "eval")
        except SyntaxError as exc:
            raise GenericFormatError(
                f"{where}: 'input' is not a Python expression: {exc.msg}"
            ) from None
    else:
        raise GenericFormatError(
            f"{where}: 'input' must be a list of arguments or a call expression string"
        )
    if not isinstance(atol, (int, float)) or atol < 0:
        raise GenericFormatError(f"{where}: 'atol' must be a non-negative number")
    display = f"assert {expr} == {test['output']!r}"
    return ConvertedTest(TestCase(expr, test["output"], atol=float(atol), display=display))


def _build(path: Path, rows: list[tuple[int, dict]]) -> list[Problem]:
    pending = []
    for _, row in rows:
        program = row.get("reference")
        if program and row.get("setup_code"):
            program = f"{row['setup_code']}\n{program}"
        pending.append(PendingProblem(row["task_id"], program, row["_tests"] + row["_plus"]))
    resolved = resolve_tests(pending, _cache_for(path), strict=True)
    problems = []
    for (_, row), (tests, seconds) in zip(rows, resolved, strict=True):
        n = len(row["_tests"])
        extra = {
            k: v for k, v in row.items() if k not in REQUIRED and k not in OPTIONAL and k[0] != "_"
        }
        if seconds is not None:
            extra["reference_seconds"] = {"base": seconds}
        if "initial_code" in row:  # where CodeRefine-v0 and the depth benchmark start
            extra["initial_code"] = row["initial_code"]
        problems.append(
            Problem(
                task_id=row["task_id"],
                prompt=row["prompt"],
                entry_point=row["entry_point"],
                tests=tests[:n],
                source=row.get("source", "custom"),
                reference=row.get("reference"),
                plus_tests=tests[n:],
                setup_code=row.get("setup_code", ""),
                completion_prefix=row.get("completion_prefix", ""),
                metadata={**row.get("metadata", {}), **extra},
            )
        )
    return problems


def _cache_for(path: Path):
    import hashlib

    return cache_path("custom", hashlib.sha256(path.read_bytes()).hexdigest())
