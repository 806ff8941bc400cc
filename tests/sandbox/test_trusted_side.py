"""The trusted side turns whatever a job reports into a verdict: it never raises or stalls."""

from __future__ import annotations

import sys
import time

import pytest

from sandbox import Limits, TestCase, matches
from sandbox.verdict import build_verdict

LIMITS = Limits()
TESTS = [TestCase("f(1)", 0.5), TestCase("f(2)", 3)]


def verdict_of(*lines: str, **reply):
    channel = "\n".join(['{"k": "loaded"}', *lines, '{"k": "done"}']) + "\n"
    return build_verdict(TESTS, {"channel": channel, **reply}, LIMITS, "test")


def test_a_huge_int_against_a_float_is_a_failed_test(pool):
    v = pool.run("def half(x):\n    return 10**400\n", [TestCase("half(1)", 0.5)])
    assert (v.status, v.outcomes[0].status) == ("failed", "failed")
    assert not matches(10**400, 0.5) and not matches(10**400, 1j)


@pytest.mark.parametrize(
    "line",
    [
        '{"k": "value", "i": 0, "v": {"c": [' + "9" * 400 + ", 0]}}",  # complex(10**400, 0)
        '{"k": "value", "i": 0, "v": ' + "[" * 50_000 + "]" * 50_000 + "}",
        '{"k": "value", "i": 0, "v": ' + "1" * 300_000 + "}",
    ],
    ids=["overflow", "deep", "long-int"],
)
def test_forged_reports_fail_their_test_quickly(line):
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)  # as if some caller had lifted Python's limit
    try:
        start = time.perf_counter()
        v = verdict_of(line, '{"k": "value", "i": 1, "v": 3}')
        took = time.perf_counter() - start
    finally:
        sys.set_int_max_str_digits(old)
    assert v.outcomes[0].status in ("error", "not_run") and v.outcomes[1].passed
    assert v.status == "error" and took < 0.5


def test_state_left_behind_counts_against_the_program():
    v = verdict_of('{"k": "value", "i": 0, "v": 0.5}', '{"k": "value", "i": 1, "v": 3}')
    assert v.passed
    for reply in ({"cleanup_error": "OSError: busy"}, {"clean": False}):
        v = verdict_of(
            '{"k": "value", "i": 0, "v": 0.5}', '{"k": "value", "i": 1, "v": 3}', **reply
        )
        assert (v.status, v.error_type) == ("error", "Leftover")


def test_is_true_compares_identity(pool):
    prog = "def check(x):\n    return int(x > 0)\n"
    tests = [TestCase("check(1)", True, oracle="is"), TestCase("check(0)", False, oracle="is")]
    v = pool.run(prog, tests)
    assert [o.status for o in v.outcomes] == ["failed", "failed"]
    assert pool.run(prog.replace("int(x > 0)", "x > 0"), tests).passed
    assert not matches(0, None, oracle="is") and not matches(1, 1, oracle="is")
