"""MBPP, MBPP sanitized and MBPP+ as `Problem`s with trusted input/expected tests.

Splits are by task number, as in the MBPP paper: prompt 1-10, test 11-510,
validation 511-600, train 601-974 (no split: all). Task ids are "Mbpp/<n>" for all
three, as in EvalPlus, so one samples file serves MBPP and MBPP+.

MBPP / sanitized: each `test_list` assert is converted (see `asserts.py`). Sanitized
`test_imports` go to `Problem.setup_code` (before the candidate); MBPP's
`test_setup_code` builds test inputs from the candidate's own classes (tasks 367, 927),
so, as in MBPP's harness, it runs after the candidate (`Problem.suffix_code`). The
prompt is the task text plus the first test, as in the MBPP paper.

MBPP+ (v0.1.0 layout, 399 tasks): `tests` = base inputs, `plus_tests` = plus inputs,
expected values from the canonical solution run in the sandbox (cached), argument
types restored (`mbpp_types.py`), floats within the task's `atol` (1e-6 when 0). Known
quirks of this copy, and how they are handled:
- the `assertion` field is not used for tests (EvalPlus does not either), so its
  three `math.isclose` asserts without `import math` (Mbpp/120, 442, 574) and the
  original asserts of Mbpp/164 and Mbpp/295 that disagree with their rewritten
  canonical solutions cannot fail a correct program. The prompt's example is built
  from the first base input and the canonical output, so it agrees with the tests.
- EvalPlus also accepts "always True" for Mbpp/164 and "always 0" for Mbpp/295 (an
  oracle over all inputs at once); here those tasks use the canonical outputs only.
- eight tasks return items in set-iteration order (Mbpp/2, 7, 111, 140, 232, 249, 579,
  769): their outputs compare as sets (EvalPlus v0.2's fix), since for strings that
  order depends on the interpreter's hash seed.
- three canonical solutions return `re.Match` objects (Mbpp/737, 787, 794), which
  cannot be compared by value: those tests compare `result is not None` (EvalPlus
  v0.2's oracle for these tasks).
- references run with a generous timeout (Mbpp/123 takes ~2.6 s).
"""

from __future__ import annotations

import ast
import warnings
from collections.abc import Sequence

from envs.benchmarks.asserts import ConvertedTest, convert_assert
from envs.benchmarks.common import (
    PendingProblem,
    call_expr,
    reference_tests,
    resolve_tests,
    sample_inputs,
    select,
)
from envs.benchmarks.data import data_sha256, read_records
from envs.benchmarks.expected import ReferenceJob, cache_path, reference_values
from envs.benchmarks.mbpp_types import restore_args
from envs.problem import Problem
from envs.sources import register_source
from sandbox.types import TestCase

SPLITS = {"prompt": (1, 10), "test": (11, 510), "validation": (511, 600), "train": (601, 974)}
# MBPP+ tasks whose canonical output order follows set iteration order (for strings it
# changes with the interpreter's hash seed): compared as sets, as EvalPlus v0.2 does.
SET_EQUAL_TASKS = frozenset({2, 7, 111, 140, 232, 249, 579, 769})


def task_number(task_id: str | int) -> int:
    return int(str(task_id).rsplit("/", 1)[-1])


def mbpp_task_id(task_id: str | int) -> str:
    return f"Mbpp/{task_number(task_id)}"


def in_split(task_id: str | int, split: str | None) -> bool:
    if split is None:
        return True
    if split not in SPLITS:
        raise ValueError(
            f"unknown MBPP split {split!r}; use one of {', '.join(SPLITS)} (or none for all)"
        )
    lo, hi = SPLITS[split]
    return lo <= task_number(task_id) <= hi


def mbpp_prompt(text: str, example: str) -> str:
    if not example:
        return f"{text.strip()}\n"
    return f"{text.strip()}\nYour code should pass this test:\n{example.strip()}\n"


@register_source("mbpp")
def load_mbpp(split: str | None = None, task_ids: Sequence[str] | None = None) -> list[Problem]:
    """The 974 MBPP problems (or one split)."""
    rows = [
        dict(
            task_id=mbpp_task_id(r["task_id"]),
            text=r["text"],
            code=r["code"],
            imports="",
            setup=r["test_setup_code"],
            tests=r["test_list"],
            challenge=r["challenge_test_list"],
        )
        for r in read_records("mbpp")
        if in_split(r["task_id"], split)
    ]
    return _assert_problems("mbpp", select(rows, task_ids) if task_ids else rows)


@register_source("mbpp_sanitized")
def load_mbpp_sanitized(
    split: str | None = None, task_ids: Sequence[str] | None = None
) -> list[Problem]:
    """The 427 hand-verified MBPP problems (or one split)."""
    rows = [
        dict(
            task_id=mbpp_task_id(r["task_id"]),
            text=r["prompt"],
            code=r["code"],
            imports="\n".join(r["test_imports"]),
            setup="",
            tests=r["test_list"],
            challenge=[],
        )
        for r in read_records("mbpp_sanitized")
        if in_split(r["task_id"], split)
    ]
    return _assert_problems("mbpp_sanitized", select(rows, task_ids) if task_ids else rows)


def _assert_problems(source: str, rows: list[dict]) -> list[Problem]:
    pending = []
    for row in rows:
        row["code"] = _unix(row["code"])
        row["setup"] = _unix(row["setup"]).strip()
        row["imports"] = row["imports"].strip()
        row["entry"] = _entry_point(row["code"], row["tests"][0])
        tests = [convert_assert(t, candidate=row["entry"]) for t in row["tests"]]
        program = "\n".join(p for p in (row["imports"], row["code"], row["setup"]) if p)
        pending.append(PendingProblem(row["task_id"], program, tests))
    resolved = resolve_tests(pending, cache_path(source, data_sha256(source)))
    return [
        Problem(
            task_id=row["task_id"],
            prompt=mbpp_prompt(row["text"], row["tests"][0]),
            entry_point=row["entry"],
            tests=tests,
            source=source,
            reference=row["code"],
            setup_code=row["imports"],
            suffix_code=row["setup"],
            metadata={
                "text": row["text"],
                "challenge_test_list": row["challenge"],
                "reference_seconds": {"base": seconds},
            },
        )
        for row, (tests, seconds) in zip(rows, resolved, strict=True)
    ]


def _unix(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _entry_point(code: str, first_test: str) -> str:
    """The function the tests call that the reference defines (MBPP names none)."""
    with warnings.catch_warnings():  # old MBPP code has invalid escape sequences
        warnings.simplefilter("ignore", SyntaxWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        tree = ast.parse(code)
    defined = [n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef)]
    called = [
        n.func.id
        for n in ast.walk(ast.parse(first_test.strip()))
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
    ]
    for name in called:
        if name in defined:
            return name
    raise ValueError(
        f"cannot tell the entry point: the test {first_test!r:.80} calls none of {defined}"
    )


@register_source("mbpp+")
def load_mbpp_plus(
    split: str | None = None,
    task_ids: Sequence[str] | None = None,
    plus: bool = True,
    plus_sample: int | None = None,
    seed: int = 0,
) -> list[Problem]:
    """MBPP+ (399 tasks): base tests plus EvalPlus's extra tests (`plus_tests`).

    `split` filters by task number like MBPP's splits; `plus=False` skips the extra
    tests; `plus_sample=N` keeps a seeded sample of N extra inputs per task.
    """
    records = [r for r in read_records("mbpp+") if in_split(r["task_id"], split)]
    records = select(records, task_ids) if task_ids else records
    parts = ("base", "plus") if plus else ("base",)
    inputs = {}
    for r in records:
        chosen = sample_inputs(r, plus, plus_sample, seed)
        n = task_number(r["task_id"])
        inputs[r["task_id"]] = {k: [restore_args(n, a) for a in v] for k, v in chosen.items()}
    calls = {
        (r["task_id"], part): [_shown_call(r, a) for a in inputs[r["task_id"]][f"{part}_input"]]
        for r in records
        for part in parts
    }
    by_id = {r["task_id"]: r for r in records}
    jobs = [
        ReferenceJob(f"{tid}:{part}", by_id[tid]["canonical_solution"], [_as_set(c) for c in shown])
        for (tid, part), shown in calls.items()
    ]
    values = reference_values(jobs, cache_path("mbpp+", data_sha256("mbpp+")))
    return [_plus_problem(r, calls, values, parts) for r in records]


def _shown_call(record: dict, args: list) -> str:
    call = call_expr(record["entry_point"], args)
    return f"set({call})" if task_number(record["task_id"]) in SET_EQUAL_TASKS else call


def _as_set(shown: str) -> str:
    """`set(x)` as `{*(x)}`: the same value, without a name the program could shadow."""
    return f"{{*({shown[4:-1]})}}" if shown.startswith("set(") else shown


def _plus_problem(record: dict, calls: dict, values: dict, parts: Sequence[str]) -> Problem:
    tid, atol = record["task_id"], float(record["atol"])
    tests: dict[str, list[TestCase]] = {"base": [], "plus": []}
    for part in parts:
        tests[part] = reference_tests(
            f"{tid} ({part})", calls[tid, part], values[f"{tid}:{part}"], atol
        )
    text = record["prompt"].strip().strip("'\"").strip()
    return Problem(
        task_id=tid,
        prompt=mbpp_prompt(text, tests["base"][0].display if tests["base"] else ""),
        entry_point=record["entry_point"],
        tests=tests["base"],
        source="mbpp+",
        reference=record["canonical_solution"],
        plus_tests=tests["plus"],
        metadata={
            "text": text,
            "assertion": record["assertion"],
            "reference_seconds": {p: values[f"{tid}:{p}"].seconds for p in parts},
        },
    )


def converted_assertion(problem: Problem) -> list[ConvertedTest]:
    """MBPP+'s original `assertion` asserts, converted (for data checks, not for scoring)."""
    lines = [
        ln for ln in problem.metadata["assertion"].splitlines() if ln.strip().startswith("assert")
    ]
    return [convert_assert(ln, candidate=problem.entry_point) for ln in lines]
