"""Benchmark sources: assert conversion, value round trips, generic format, real data.

The canonical-solution checks run the real sandbox on the real (shipped) data.
"""

from __future__ import annotations

import ast
import gzip
import json
import math

import pytest

from envs.benchmarks.asserts import AssertConversionError, convert_assert
from envs.benchmarks.data import FILES, data_path, read_records
from envs.benchmarks.generic import GenericFormatError, load_generic_jsonl
from envs.benchmarks.mbpp import SPLITS, in_split
from envs.benchmarks.mbpp_types import ARG_TYPES, restore_args
from envs.benchmarks.values import NotALiteral, from_source, to_source
from envs.sources import available_sources, load_problems

# ---------------------------------------------------------------- values


@pytest.mark.parametrize(
    "value",
    [
        1,
        -2.5,
        "a'b\"\n",
        b"\x00x",
        None,
        True,
        (1,),
        (),
        [1, (2, 3), {4}],
        set(),
        frozenset({1, 2}),
        {(1, 2): [3.0]},
        1 + 2j,
        -3j,
        math.inf,
        -math.inf,
        10**30,
        pytest.param(-(7**20000), id="huge-int"),
    ],
)
def test_value_round_trip(value):
    text = to_source(value)
    back = from_source(text)
    assert back == value and type(back) is type(value)
    assert eval(text) == value  # the source is also what the sandbox evaluates


def test_nan_round_trips_and_repr_names_are_read():
    assert math.isnan(from_source(to_source(math.nan)))
    assert from_source("[inf, -inf]") == [math.inf, -math.inf]


@pytest.mark.parametrize("text", ["f(1)", "__import__('os')", "{**a}", "x + 1", "[1, y]"])
def test_from_source_refuses_code(text):
    with pytest.raises(NotALiteral):
        from_source(text)


def test_to_source_refuses_objects():
    with pytest.raises(TypeError, match="cannot write"):
        to_source(object())


# ---------------------------------------------------------------- assert conversion


def test_equality_with_literal_either_side():
    t = convert_assert("assert add(1, 2) == 3")
    assert (t.case.expr, t.case.expected, t.case.oracle, t.pending) == ("add(1, 2)", 3, "eq", False)
    assert t.case.display == "assert add(1, 2) == 3"
    t = convert_assert("assert (4, 5) == f([1])")
    assert (t.case.expr, t.case.expected) == ("f([1])", (4, 5))


def test_isclose_and_abs_difference_become_atol():
    t = convert_assert("assert math.isclose(vol(10), 4188.79, rel_tol=0.001)")
    assert t.case.expr == "vol(10)" and t.case.expected == 4188.79
    assert t.case.atol == pytest.approx(0.001 * 4188.79 / 0.999)
    t = convert_assert("assert math.isclose(f(1), 0, rel_tol=0.1, abs_tol=0.5)")
    assert t.case.atol == 0.5
    t = convert_assert("assert abs(f(1.33) - 0.33) < 1e-06")
    assert (t.case.expr, t.case.expected, t.case.atol) == ("f(1.33)", 0.33, 1e-06)


def test_truth_and_negation_send_the_same_expression():
    """The expression must not tell a candidate which truth value passes."""
    t = convert_assert("assert is_prime(7)")
    assert (t.case.expr, t.case.expected, t.case.oracle) == ("not not (is_prime(7))", True, "eq")
    t = convert_assert("assert not is_prime(8)")
    assert (t.case.expr, t.case.expected, t.case.oracle) == ("not not (is_prime(8))", False, "eq")
    t = convert_assert("assert not f(1) > 3")
    assert (t.case.expr, t.case.oracle) == ("not (f(1) > 3)", "truthy")  # operators stay


def test_dict_expected_values_accept_dict_subclasses():
    t = convert_assert("assert freq([1, 1]) == {1: 2}")
    assert (t.case.expr, t.case.expected) == ("{**(freq([1, 1]))}", {1: 2})


def test_identity_with_constant_is_identity():
    t = convert_assert("assert f(2) is None")
    assert (t.case.expr, t.case.expected, t.case.oracle) == ("f(2)", None, "is")


def test_non_literal_expected_side_is_pending():
    t = convert_assert('assert size(("A", 1)) == sys.getsizeof(("A", 1))', candidate="size")
    assert t.pending and t.case.expr == "size(('A', 1))" and not t.case.has_expected
    assert t.expected_expr == "sys.getsizeof(('A', 1))"


def test_comparison_of_the_candidate_with_itself_stays_whole():
    t = convert_assert("assert tuple(f([1, 2])) == tuple(f([2, 1]))", candidate="f")
    assert not t.pending and t.case.oracle == "truthy"
    assert t.case.expr == "not not (tuple(f([1, 2])) == tuple(f([2, 1])))"
    assert t.value_expr == "tuple(f([1, 2]))"  # with a reference: eq on the reference's value


@pytest.mark.parametrize("text", ["x = 1", "assert f(", "assert f(1) == 2\nassert f(2) == 3"])
def test_bad_asserts_are_refused(text):
    with pytest.raises(AssertConversionError):
        convert_assert(text)


# ---------------------------------------------------------------- data files


def test_shipped_data_matches_the_recorded_checksums():
    import hashlib

    sums = {
        "humaneval.jsonl.gz": "e60bc7312a1eee0c4e1e1e8cf984f323fef2e60260bc22c8be05ff3b2a10a8af",
        "humanevalplus-v0.1.10.jsonl.gz": "b6af7f372ba7f873194fb78f23ada024f875a6a8487cdec239555639aea30747",
        "mbpp.jsonl.gz": "c1cc7f186e8d70af6a71ca5ffd717893963cd826b0fa1a3cc8ca26ad4ab1cb8c",
        "mbpp_sanitized.jsonl.gz": "6be3fe5ca5860792ea79f237866a1ece2f13e098db994d4bba9113f7c32b3607",
        "mbppplus-v0.1.0-prerelease.jsonl.gz": "4abfe0617f51302a283bb3c925cf6371c3acb05ca5c906501e8222ea7da2250e",
        "humanevalpack-python.jsonl.gz": "34f43baeb6e324c8248088c0f836f27575e056da912cd73dce4dd77bfdbd4c44",
    }
    for name, file in FILES.items():
        assert hashlib.sha256(data_path(name).read_bytes()).hexdigest() == sums[file]
    counts = {name: len(read_records(name)) for name in FILES}
    assert counts == {
        "humaneval": 164,
        "humaneval+": 164,
        "mbpp": 974,
        "mbpp_sanitized": 427,
        "mbpp+": 399,
        "humanevalfix": 164,
    }


def test_mbpp_splits_partition_the_task_numbers():
    numbers = [r["task_id"] for r in read_records("mbpp")]
    sizes = {s: sum(in_split(n, s) for n in numbers) for s in SPLITS}
    assert sizes == {"prompt": 10, "test": 500, "validation": 90, "train": 374}
    with pytest.raises(ValueError, match="unknown MBPP split 'dev'"):
        in_split(5, "dev")


def test_mbpp_plus_restored_args_match_the_original_asserts():
    """The first base inputs are the original asserts' arguments: after type restoration
    they must equal them, types included, except in tasks where EvalPlus's own inputs
    differ from the asserts (kept as EvalPlus runs them)."""
    known_divergent = {87, 98, 104, 124, 140, 145, 252, 301, 582, 596}
    checked, divergent = 0, set()
    for r in read_records("mbpp+"):
        number = int(r["task_id"].split("/")[1])
        lines = [
            ln.strip() for ln in r["assertion"].splitlines() if ln.strip().startswith("assert")
        ]
        for args_in, line in zip(r["base_input"], lines, strict=False):
            call = next(
                c
                for c in ast.walk(ast.parse(line))
                if isinstance(c, ast.Call) and getattr(c.func, "id", "") == r["entry_point"]
            )
            try:
                args = [from_source(ast.unparse(a)) for a in call.args]
            except NotALiteral:
                continue
            checked += 1
            if to_source(args) != to_source(restore_args(number, args_in)):
                divergent.add(number)
    assert checked > 1200
    assert divergent == known_divergent
    assert restore_args(2, [[3, 4], [5]]) == [(3, 4), (5,)]
    assert restore_args(124, [0, "1j"]) == [0.0, 1j]
    assert 3 not in ARG_TYPES and restore_args(3, [[3, 4]]) == [[3, 4]]


def test_sources_are_registered():
    assert {"humaneval", "humaneval+", "mbpp", "mbpp_sanitized", "mbpp+", "humanevalfix"} <= set(
        available_sources()
    )


# ---------------------------------------------------------------- generic format


def _write(tmp_path, rows, name="problems.jsonl"):
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


GOOD = {
    "task_id": "add",
    "prompt": "Write add(a, b).",
    "entry_point": "add",
    "tests": [
        "assert add(1, 2) == 3",
        {"input": [2, 2], "output": 4},
        {"input": "add(-1, 1)", "output": 0},
    ],
    "reference": "def add(a, b):\n    return a + b\n",
    "difficulty": "easy",
}


def test_generic_jsonl_loads_all_test_forms(tmp_path):
    (p,) = load_problems(str(_write(tmp_path, [GOOD])))
    assert (p.task_id, p.entry_point, p.source) == ("add", "add", "custom")
    assert [(t.expr, t.expected) for t in p.tests] == [
        ("add(1, 2)", 3),
        ("add(2, 2)", 4),
        ("add(-1, 1)", 0),
    ]
    assert p.metadata["difficulty"] == "easy" and p.metadata["reference_seconds"]["base"] > 0


def test_generic_jsonl_gzip(tmp_path):
    path = tmp_path / "p.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(json.dumps(GOOD) + "\n")
    assert load_generic_jsonl(path)[0].task_id == "add"


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", r"problems.jsonl:2: not valid JSON"),
        ("[1, 2]", r"problems.jsonl:2: expected a JSON object"),
        ({**GOOD, "task_id": "b", "tests": []}, r":2: 'tests' is empty"),
        (
            {k: v for k, v in GOOD.items() if k != "entry_point"},
            r":2: missing required key 'entry_point'",
        ),
        ({**GOOD, "task_id": "b", "prompt": 3}, r":2: 'prompt' must be a str"),
        (
            {**GOOD, "task_id": "b", "entry_point": "a b"},
            r":2: entry_point 'a b' is not a Python identifier",
        ),
        ({**GOOD, "task_id": "b", "tests": ["x = 1"]}, r":2: tests\[0\]: expected one `assert`"),
        (
            {**GOOD, "task_id": "b", "tests": [{"input": [1]}]},
            r":2: tests\[0\]: a test is an assert string",
        ),
        (
            {**GOOD, "task_id": "b", "tests": [{"input": "add(", "output": 1}]},
            r":2: tests\[0\]: 'input' is not",
        ),
        ({**GOOD}, r":2: duplicate task_id 'add' \(first on line 1\)"),
        (
            {
                **{k: v for k, v in GOOD.items() if k != "reference"},
                "task_id": "c",
                "tests": ["assert add(1, 1) == len('ab')"],
            },
            r":2: the test .* compares against an expression.*add a 'reference'",
        ),
    ],
)
def test_generic_jsonl_malformed_lines_name_file_and_line(tmp_path, line, message):
    path = _write(tmp_path, [GOOD, line])
    with pytest.raises(GenericFormatError, match=message):
        load_generic_jsonl(path)


def test_generic_missing_file():
    with pytest.raises(FileNotFoundError, match="problem file not found"):
        load_generic_jsonl("no/such/file.jsonl")


def test_unknown_source_names_the_choices():
    with pytest.raises(KeyError, match="unknown problem source 'humanevil'.*humaneval"):
        load_problems("humanevil")


def test_single_split_benchmarks_refuse_other_splits():
    with pytest.raises(ValueError, match="has one split"):
        load_problems("humaneval:train")


# ---------------------------------------------------------------- canonical solutions (real sandbox)


def _failures(problems, plus=False):
    """Task ids whose reference solution fails its own tests in the sandbox."""
    from sandbox import run_batch
    from sandbox.types import Limits

    jobs = [(p.program(p.reference), p.plus_tests if plus else p.tests) for p in problems]
    verdicts = run_batch(jobs, limits=Limits(timeout_s=60, cpu_s=60))
    return [
        (p.task_id, v.status, v.first_failure)
        for p, v in zip(problems, verdicts, strict=True)
        if not v.passed
    ]


def test_humaneval_canonical_solutions_pass():
    problems = load_problems("humaneval")
    assert len(problems) == 164 and sum(len(p.tests) for p in problems) > 1400
    origins = {p.task_id for p in problems if p.metadata["test_origin"] == "base_input"}
    assert origins == {f"HumanEval/{n}" for n in (32, 38, 44, 50, 53, 151)}
    (p32,) = [p for p in problems if p.task_id == "HumanEval/32"]
    assert {t.oracle for t in p32.tests} == {"find_zero"} and len(p32.tests) == 100
    assert _failures(problems) == []


def test_mbpp_test_split_canonical_solutions_pass():
    problems = load_problems("mbpp:test")
    assert len(problems) == 500 and all(p.tests for p in problems)
    assert _failures(problems) == []


def test_mbpp_test_setup_code_runs_after_the_candidate():
    (p,) = load_problems("mbpp", task_ids=["Mbpp/927"])
    assert p.suffix_code.startswith("root = Node(1)") and p.program("X").startswith(
        "X\nroot = Node(1)"
    )
    assert _failures([p]) == []


def truthy_tasks(problems) -> list[str]:
    return [p.task_id for p in problems for t in p.tests + p.plus_tests if t.oracle == "truthy"]


@pytest.mark.parametrize("name", ["humaneval", "mbpp", "mbpp_sanitized"])
def test_no_shipped_benchmark_keeps_a_truthy_test(name):
    """Truthy tests can be passed by a program that reads the test (scripts/check_canonical.py
    prints the counts; the EvalPlus sets are checked with their canonical solutions)."""
    assert truthy_tasks(load_problems(name)) == []


def test_a_program_that_reads_its_tests_fails_humaneval_52():
    from sandbox import run

    (p,) = load_problems("humaneval", task_ids=["HumanEval/52"])
    reader = (  # one `not` in the calling expression: a falsy value passes, else a truthy one
        "import sys, dis\n"
        "def below_threshold(l, t):\n"
        "    ops = [i.opname for i in dis.get_instructions(sys._getframe(1).f_code)]\n"
        "    return ops.count('UNARY_NOT') != 1\n"
    )
    v = run(p.program(reader), p.tests)
    assert p.tests and v.num_passed < v.num_tests


def test_generic_problems_without_a_reference_warn_about_truthy_tests(tmp_path):
    row = dict(GOOD, tests=["assert add(1, 2) > 0", "assert add(1, 2) == 3"])
    del row["reference"]
    with pytest.warns(UserWarning, match="1 truthy test"):
        (p,) = load_problems(str(_write(tmp_path, [row])))
    assert [t.oracle for t in p.tests] == ["truthy", "eq"]


def test_mbpp_sanitized_canonical_solutions_pass():
    assert len(load_problems("mbpp_sanitized:test")) == 257
    problems = load_problems(
        "mbpp_sanitized:validation"
    )  # all 427 pass: scripts/check_canonical.py
    assert len(problems) > 30 and all(p.tests for p in problems)
    assert _failures(problems) == []


@pytest.mark.parametrize("name", ["humaneval+", "mbpp+"])
def test_evalplus_canonical_solutions_pass_base_and_a_seeded_plus_sample(name):
    """Base tests in full, plus tests on a seeded sample of 3 inputs per task (the full
    plus sets are checked by scripts/check_canonical.py)."""
    problems = load_problems(name, plus_sample=3, seed=1)
    assert len(problems) == {"humaneval+": 164, "mbpp+": 399}[name]
    assert (
        all(p.tests for p in problems)
        and sum(len(p.plus_tests) for p in problems) > 3 * len(problems) * 0.9
    )
    assert _failures(problems) == []
    assert _failures(problems, plus=True) == []
    assert truthy_tasks(problems) == []


def test_mbpp_plus_quirky_tasks_are_consistent():
    """Mbpp/164 and 295 carry original asserts that disagree with their canonical
    solutions; the tests (and the prompt's example) come from the canonical outputs."""
    from envs.benchmarks.mbpp import converted_assertion
    from sandbox import run_batch
    from sandbox.types import Limits

    problems = load_problems(
        "mbpp+", task_ids=["Mbpp/164", "Mbpp/295", "Mbpp/120", "Mbpp/442"], plus=False
    )
    by_id = {p.task_id: p for p in problems}
    assert "(sum_div(8), 15.0, abs_tol=1e-06)" in by_id["Mbpp/295"].prompt
    jobs = [(p.program(p.reference), [t.case for t in converted_assertion(p)]) for p in problems]
    verdicts = run_batch(jobs, limits=Limits(timeout_s=60, cpu_s=60))
    passed = {p.task_id: v.passed for p, v in zip(problems, verdicts, strict=True)}
    # isclose asserts without `import math` are converted to atol tests: no NameError.
    assert passed == {"Mbpp/164": False, "Mbpp/295": False, "Mbpp/120": True, "Mbpp/442": True}
    assert _failures(problems) == []


# ---------------------------------------------------------------- the expected-output cache


def test_expected_outputs_are_cached_and_resume(tmp_path, monkeypatch):
    import sandbox
    from envs.benchmarks.expected import ReferenceJob, cache_path, reference_values

    monkeypatch.setenv("ACTORLEARNER_CACHE", str(tmp_path))
    calls = []
    real = sandbox.run_batch

    def counting(jobs, **kw):
        calls.append(len(jobs))
        return real(jobs, **kw)

    monkeypatch.setattr(sandbox, "run_batch", counting)
    program = "from collections import Counter\ndef f(x):\n    return Counter(x) if x else 1 / x\n"
    a = ReferenceJob("a", program, ["f('ab')", "f(0)", "sorted([3, 1])"])
    b = ReferenceJob("b", "def g(n):\n    return (n, {n})\n", ["g(2)"])
    path = cache_path("unit", "sha")
    got = reference_values([a], path)["a"]
    assert got.values == {0: {"a": 1, "b": 1}, 2: [1, 3]} and got.exprs[0] == "{**(f('ab'))}"
    assert "ZeroDivisionError" in got.errors[1] and path.is_file()
    first = len(calls)
    both = reference_values([a, b], path)
    assert both["b"].values == {0: (2, {2})} and len(calls) == first + 1  # only `b` ran
    assert reference_values([a, b], path)["a"].values == got.values and len(calls) == first + 1
    path.write_bytes(b"not gzip")  # a damaged cache is recomputed, never trusted
    assert reference_values([b], path)["b"].values == {0: (2, {2})} and len(calls) == first + 2


def test_a_slow_input_is_split_out_and_recorded(tmp_path, monkeypatch):
    from envs.benchmarks import expected
    from sandbox.types import Limits

    monkeypatch.setattr(expected, "REFERENCE_LIMITS", Limits(timeout_s=1.0, cpu_s=2))
    program = "def spin():\n    while True:\n        pass\n"
    job = expected.ReferenceJob("slow", program, ["1 + 1", "spin()", "[3]"])
    got = expected.reference_values([job], tmp_path / "c.json.gz")["slow"]
    assert got.values == {0: 2, 2: [3]}
    assert got.errors[1].startswith("Timeout")
