"""Semantics of a run: values come back, comparisons happen outside, errors are reported."""

from __future__ import annotations

import math

import sandbox
from sandbox import Limits, TestCase

ADD = "def add(a, b):\n    return a + b\n"


def test_pass_and_fail_are_decided_outside(pool):
    v = pool.run(ADD, [TestCase("add(1, 2)", 3), TestCase("add(2, 2)", 5)])
    assert v.status == "failed"
    assert [o.status for o in v.outcomes] == ["passed", "failed"]
    assert v.first_failure is not None
    assert (v.first_failure.expected, v.first_failure.actual) == ("5", "4")
    assert v.pass_rate == 0.5
    assert v.backend == pool.backend


def test_all_pass(pool):
    v = pool.run(ADD, [TestCase("add(1, 2)", 3), TestCase("add('a', 'b')", "ab")])
    assert v.passed and v.num_passed == 2


def test_unset_expected_reports_values(pool):
    values = [(1, 2), [1.5, None], {"a": {1, 2}}, b"x\x00", 1 + 2j, 10**400, math.inf, "é"]
    tests = [TestCase(repr(x)) for x in values[:-2]] + [TestCase("float('inf')"), TestCase("'é'")]
    v = pool.run("", tests)
    assert v.passed
    assert [o.value for o in v.outcomes] == values
    nan = pool.run("", [TestCase("float('nan')")]).outcomes[0].value
    assert math.isnan(nan)


def test_exception_per_test_does_not_stop_later_tests(pool):
    v = pool.run(ADD, [TestCase("add(1, None)", 1), TestCase("add(1, 1)", 2)])
    assert v.status == "failed"
    first, second = v.outcomes
    assert first.status == "error" and first.error_type == "TypeError"
    assert "unsupported operand" in first.message
    assert 'File "<candidate>", line 2, in add' in first.traceback
    assert second.passed


def test_syntax_error_is_a_program_error(pool):
    v = pool.run("def f(:\n  pass", [TestCase("f()", 1)])
    assert v.status == "error" and v.error_type == "SyntaxError"
    assert v.outcomes[0].status == "not_run"


def test_crash_at_import_is_a_program_error(pool):
    v = pool.run("import os\nraise ValueError('boom')", [TestCase("1", 1)])
    assert (v.status, v.error_type, v.message) == ("error", "ValueError", "boom")


def test_timeout_reports_the_limit(pool):
    v = pool.run(ADD + "while True: pass", [TestCase("add(1, 2)", 3)], Limits(timeout_s=0.5))
    assert v.status == "timeout"
    assert v.message == "timed out after 0.5 s"
    assert v.outcomes[0].status == "timeout"


def test_timeout_during_tests_keeps_earlier_outcomes(pool):
    prog = "def f(x):\n    while x: pass\n    return 1\n"
    v = pool.run(prog, [TestCase("f(0)", 1), TestCase("f(1)", 1)], Limits(timeout_s=0.5))
    assert v.status == "timeout"
    assert [o.status for o in v.outcomes] == ["passed", "timeout"]


def test_output_is_captured_and_capped(pool):
    v = pool.run(
        "print('hello', flush=True)\nimport sys; print('x' * 5000, file=sys.stderr)",
        [],
        Limits(output_bytes=100),
    )
    assert v.passed
    assert v.stdout.startswith("hello\nxxx") and len(v.stdout) == 100


def test_non_builtin_values_cannot_be_reported(pool):
    prog = "class Int(int):\n    pass\nclass Box:\n    pass\n"
    v = pool.run(prog, [TestCase("Int(3)", 3), TestCase("Box()", None)])
    assert [o.status for o in v.outcomes] == ["error", "error"]
    assert "cannot report a value of type 'Int'" in v.outcomes[0].message


def test_oracles(pool):
    prog = "import math\ndef root(xs):\n    return 1.0\ndef is_even(n):\n    return n % 2 == 0\n"
    tests = [
        TestCase("root([-1, 1])", [-1, 1], atol=1e-6, oracle="find_zero"),  # 1 is a root of x - 1
        TestCase(
            "root([-2, 1])", [-2, 1], atol=1e-6, oracle="find_zero"
        ),  # 1 is not a root of x - 2
        TestCase("is_even(4)", oracle="truthy"),
        TestCase("is_even(3)", oracle="truthy"),
        TestCase("0.1 + 0.2", 0.3, atol=1e-9),
    ]
    v = pool.run(prog, tests)
    assert [o.status for o in v.outcomes] == ["passed", "failed", "passed", "failed", "passed"]


def test_scratch_dir_is_writable_and_fresh(pool):
    prog = "import os\nfiles = os.listdir('.')\nopen('f.txt', 'w').write('data')\n"
    v1 = pool.run(
        prog,
        [
            TestCase("[f for f in files if not f.startswith('.')]", []),
            TestCase("open('f.txt').read()", "data"),
        ],
    )
    v2 = pool.run(prog, [TestCase("[f for f in files if not f.startswith('.')]", [])])
    assert v1.passed and v2.passed


def test_module_level_run_and_batch():
    v = sandbox.run(ADD, [TestCase("add(2, 3)", 5)])
    assert v.passed and v.backend in ("firejail", "unshare")
    jobs = [(ADD, [TestCase(f"add({i}, 1)", i + 1 if i % 2 else 0)]) for i in range(10)]
    verdicts = sandbox.run_batch(jobs)
    assert [v.passed for v in verdicts] == [bool(i % 2) for i in range(10)]


def test_bad_tests_give_clear_errors(pool):
    import pytest

    with pytest.raises(TypeError, match="TestCase"):
        pool.run(ADD, ["add(1, 2)"])
    with pytest.raises(ValueError, match="non-empty expression"):
        pool.run(ADD, [TestCase("")])


def test_oversized_values_are_cut_off_with_a_reason(pool):
    big = "def f():\n    return 'x' * (6 << 20)\n"
    v = pool.run(big, [TestCase("f()", "x"), TestCase("f()", "x"), TestCase("f()", "x")])
    assert v.status == "error"
    assert "exceeded the sandbox's size limit" in v.message
