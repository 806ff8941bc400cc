"""Reply parsing (explanation/code + spans) and execution-feedback rendering."""

from __future__ import annotations

import pytest

from envs.templates import Templates, format_reply, parse_reply, render_feedback
from sandbox import types as st

CODE = "def add(a, b):\n    return a + b"


def _check_spans(p):
    s, e = p.explanation_span
    assert p.text[s:e] == p.explanation
    if p.code is not None:
        s, e = p.code_span
        assert p.text[s:e] == p.code


def test_format_parse_roundtrip():
    text = format_reply("  The sign is wrong: `a - b` subtracts.\n", CODE + "\n\n")
    assert text == f"The sign is wrong: `a - b` subtracts.\n```python\n{CODE}\n```"
    p = parse_reply(text)
    assert (p.explanation, p.code, p.fenced) == (
        "The sign is wrong: `a - b` subtracts.",
        CODE,
        True,
    )
    assert p.explanation_span == (0, len(p.explanation))
    assert p.text[p.code_span[1] :] == "\n```"
    _check_spans(p)


def test_missing_explanation():
    p = parse_reply(format_reply("", CODE))
    assert p.explanation == "" and p.explanation_span[0] == p.explanation_span[1]
    assert p.code == CODE
    _check_spans(p)


def test_several_blocks_prefers_the_one_defining_the_entry_point():
    text = (
        "The bad line is\n```python\nreturn a - b\n```\nFixed:\n```py\n"
        f"{CODE}\n```\nAnd a usage example:\n```python\nprint(add(1, 2))\n```\n"
    )
    assert parse_reply(text).code == "print(add(1, 2))"  # last python block
    p = parse_reply(text, entry_point="add")
    assert p.code == CODE
    assert p.explanation.startswith("The bad line is\n```python\nreturn a - b")
    assert p.explanation.endswith("Fixed:")
    _check_spans(p)


def test_non_python_block_loses_to_python_block():
    text = f"Output:\n```text\n3\n```\n```python\n{CODE}\n```\n```bash\nls\n```"
    assert parse_reply(text).code == CODE


def test_unclosed_fence_is_still_code():
    p = parse_reply(f"Fix the sign.\n```python\n{CODE}\n")
    assert p.code == CODE and p.has_code and p.syntax_error is None
    _check_spans(p)


def test_unfenced_code_is_recovered_and_flagged():
    p = parse_reply(f"The sign is wrong.\n{CODE}\n")
    assert (p.explanation, p.code, p.fenced) == ("The sign is wrong.", CODE, False)
    _check_spans(p)


def test_no_code():
    p = parse_reply("I think the loop is wrong but I am not sure.\ndefinitely.")
    assert not p.has_code and p.code is None
    assert p.code_span[0] == p.code_span[1]
    assert p.explanation == "I think the loop is wrong but I am not sure.\ndefinitely."


def test_syntax_error_reported():
    p = parse_reply("x\n```python\ndef f(:\n    pass\n```")
    assert p.has_code and p.syntax_error.startswith("SyntaxError")


def _verdict(outcome: st.TestOutcome, status="failed") -> st.Verdict:
    return st.Verdict(status=status, outcomes=[outcome], timeout_s=4.0)


TESTS = [st.TestCase("add(1, 2)", 3, display="assert add(1, 2) == 3")]


def test_feedback_failed_test_shows_expected_and_actual():
    v = _verdict(st.TestOutcome(0, "failed", expr="add(1, 2)", actual="-1", expected="3"))
    text = render_feedback(v, TESTS, Templates())
    assert text == "The code fails the test:\nassert add(1, 2) == 3\nExpected: 3\nActual: -1"


def test_feedback_exception_shows_type_message_and_short_traceback():
    tb = "\n".join(f'  File "<candidate>", line {i}, in add' for i in range(20))
    o = st.TestOutcome(
        0,
        "error",
        expr="add(1, 2)",
        error_type="NameError",
        message="name 'c' is not defined",
        traceback=tb,
    )
    text = render_feedback(_verdict(o, "error"), TESTS, Templates(max_traceback_lines=3))
    assert "assert add(1, 2) == 3" in text and "NameError: name 'c' is not defined" in text
    assert "line 19" in text and "line 16" not in text  # only the last 3 lines


def test_feedback_timeout_and_program_error_and_pass():
    t = Templates()
    v = _verdict(st.TestOutcome(0, "timeout", expr="add(1, 2)"), "timeout")
    assert (
        render_feedback(v, TESTS, t)
        == "The code timed out on the test:\nassert add(1, 2) == 3\n(time limit 4.0 s)"
    )
    v = st.Verdict(
        "error",
        [st.TestOutcome(0, "not_run", expr="add(1, 2)")],
        error_type="SyntaxError",
        message="invalid syntax",
    )
    assert render_feedback(v, TESTS, t).startswith(
        "The program fails before any test runs:\nSyntaxError: invalid syntax"
    )
    v = st.Verdict("timeout", [], timeout_s=2.0)
    assert render_feedback(v, TESTS, t) == "The program timed out (time limit 2.0 s)."
    v = st.Verdict("passed", [st.TestOutcome(0, "passed")])
    assert render_feedback(v, TESTS, t) == "All tests passed."


def test_templates_overrides():
    t = Templates.from_overrides({"passed": "OK!"})
    assert t.passed == "OK!" and t.no_code == Templates().no_code
    with pytest.raises(ValueError, match="unknown template field"):
        Templates.from_overrides({"pased": "OK"})
