"""Every prompt and feedback text the env shows a model, plus the reply format.

One place, one dataclass: experimenters change wording by passing a `Templates`
(or a dict of overrides) to the env. The content follows the LeDex paper: the
problem, the wrong code, then the execution feedback (failed test with expected
vs actual output, or exception type + message + short traceback, or timeout).

Reply format (what SFT teaches and the env parses)::

    <explanation>
    ```python
    <whole fixed program>
    ```
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from sandbox.types import TestCase, TestOutcome, Verdict

SYSTEM_PROMPT = (
    "You are an expert Python programmer. When shown wrong code and its execution "
    "feedback, first explain briefly what is wrong, then give the whole fixed program "
    "in one ```python code block."
)


@dataclass(frozen=True)
class Templates:
    """Text templates, filled with `str.format` (named fields listed per template)."""

    system: str = SYSTEM_PROMPT
    # {problem} {code} {feedback}
    first_user: str = (
        "{problem}\n\nHere is a wrong solution:\n```python\n{code}\n```\n\n"
        "Execution feedback:\n{feedback}\n\n"
        "Explain what is wrong with the code, then give the whole fixed program "
        "in one ```python block."
    )
    # {feedback}
    next_user: str = (
        "Execution feedback:\n{feedback}\n\n"
        "The code is still wrong. Explain what is wrong, then give the whole fixed "
        "program in one ```python block."
    )
    passed: str = "All tests passed."
    # {test} {expected} {actual}
    failed_test: str = "The code fails the test:\n{test}\nExpected: {expected}\nActual: {actual}"
    # {test} {error} {traceback}
    test_error: str = "The code raises an exception on the test:\n{test}\n{error}{traceback}"
    # {test} {limit}
    test_timeout: str = "The code timed out on the test:\n{test}\n(time limit {limit} s)"
    # {error} {traceback}
    program_error: str = "The program fails before any test runs:\n{error}{traceback}"
    # {limit}
    program_timeout: str = "The program timed out (time limit {limit} s)."
    no_code: str = (
        "Your reply had no ```python code block, so nothing was run. Reply with an "
        "explanation followed by the whole fixed program in one ```python block."
    )
    max_traceback_lines: int = 6
    max_value_chars: int = 300

    @classmethod
    def from_overrides(cls, overrides: Templates | Mapping[str, Any] | None) -> Templates:
        """Build from a `Templates`, a dict of field overrides, or None (defaults)."""
        if overrides is None:
            return cls()
        if isinstance(overrides, Templates):
            return overrides
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown template field(s) {unknown}; known fields: {sorted(known)}")
        return replace(cls(), **dict(overrides))


# --------------------------------------------------------------------------- replies


@dataclass(frozen=True)
class ParsedReply:
    """A model reply split into explanation and code, with character spans into the text.

    A span is ``(start, end)``, end exclusive; an absent part has an empty span
    (``start == end``). `fenced` is False when the code was recovered from a reply
    without a code fence.
    """

    text: str
    explanation: str
    code: str | None
    explanation_span: tuple[int, int]
    code_span: tuple[int, int]
    fenced: bool = True

    @property
    def has_code(self) -> bool:
        return bool(self.code and self.code.strip())

    @property
    def syntax_error(self) -> str | None:
        """The SyntaxError message if the code does not parse, else None."""
        if not self.has_code:
            return None
        try:
            ast.parse(self.code or "")
        except (SyntaxError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return None


def format_reply(explanation: str, code: str) -> str:
    """The canonical reply: explanation, then the whole program in one python fence."""
    explanation = explanation.strip()
    block = f"```python\n{code.strip(chr(10)).rstrip()}\n```"
    return f"{explanation}\n{block}" if explanation else block


_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+-]*)[^\n]*\n", re.MULTILINE)
_CLOSE = re.compile(r"^[ \t]*```[ \t]*$", re.MULTILINE)
_PY_TAGS = {"", "python", "py", "python3", "py3"}
_CODE_START = re.compile(r"^(def |class |import |from |@)", re.MULTILINE)


@dataclass(frozen=True)
class _Block:
    tag: str
    start: int  # start of the opening fence line
    code_start: int
    code_end: int
    end: int  # end of the closing fence (or of the text when unclosed)


def _blocks(text: str) -> list[_Block]:
    out, pos = [], 0
    while (m := _FENCE.search(text, pos)) is not None:
        close = _CLOSE.search(text, m.end())
        code_end = close.start() if close else len(text)
        end = close.end() if close else len(text)
        out.append(_Block(m.group(1).lower(), m.start(), m.end(), code_end, end))
        pos = end
    return out


def _strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    """Shrink [start, end) to exclude surrounding whitespace (empty span stays at start)."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _choose(blocks: list[_Block], text: str, entry_point: str | None) -> _Block:
    python = [b for b in blocks if b.tag in _PY_TAGS] or blocks
    if entry_point:
        defining = re.compile(rf"^\s*(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", re.M)
        hits = [b for b in python if defining.search(text, b.code_start, b.code_end)]
        if hits:
            return hits[-1]
    return python[-1]


def parse_reply(text: str, entry_point: str | None = None) -> ParsedReply:
    """Split a reply into explanation and code, tolerantly.

    The code is the last python (or untagged) fenced block, preferring the last one
    that defines `entry_point` when given; an unclosed final fence (a generation cut
    short) still counts. The explanation is the text before that block. Without any
    fence, a trailing part that starts with ``def``/``import``/... and parses as
    Python is taken as (unfenced) code; otherwise the reply has no code.
    """
    blocks = _blocks(text)
    if blocks:
        b = _choose(blocks, text, entry_point)
        cs, ce = b.code_start, b.code_end
        while ce > cs and text[ce - 1] in "\r\n \t":
            ce -= 1
        es, ee = _strip_span(text, 0, b.start)
        return ParsedReply(text, text[es:ee], text[cs:ce], (es, ee), (cs, ce), fenced=True)
    for m in _CODE_START.finditer(text):
        tail = text[m.start() :]
        try:
            ast.parse(tail)
        except (SyntaxError, ValueError):
            continue
        cs, ce = _strip_span(text, m.start(), len(text))
        es, ee = _strip_span(text, 0, m.start())
        return ParsedReply(text, text[es:ee], text[cs:ce], (es, ee), (cs, ce), fenced=False)
    es, ee = _strip_span(text, 0, len(text))
    return ParsedReply(text, text[es:ee], None, (es, ee), (ee, ee), fenced=False)


# ------------------------------------------------------------------------- feedback


def _clip(s: str | None, n: int) -> str:
    s = "" if s is None else str(s)
    return s if len(s) <= n else s[: n - 3] + "..."


def show_test(test: TestCase | None, outcome: TestOutcome) -> str:
    """How a test reads to a model: its `display` text, else an assert built from it."""
    if test is not None and test.display:
        return test.display
    expr = outcome.expr or (test.expr if test else "")
    if outcome.expected is not None:
        return f"assert {expr} == {outcome.expected}"
    return expr


def _error(etype: str | None, message: str | None, n: int) -> str:
    etype = etype or "Error"
    return f"{etype}: {_clip(message, n)}" if message else etype


def _traceback(tb: str | None, max_lines: int) -> str:
    if not tb or max_lines <= 0:
        return ""
    lines = [ln for ln in tb.rstrip().splitlines() if ln.strip()]
    return "\nTraceback (most recent call last, shortened):\n" + "\n".join(lines[-max_lines:])


def render_feedback(verdict: Verdict, tests: list[TestCase], t: Templates) -> str:
    """The paper's execution feedback for one verdict."""
    if verdict.passed:
        return t.passed
    limit = verdict.timeout_s if verdict.timeout_s is not None else "?"
    failure = verdict.first_failure
    if failure is None or failure.status == "not_run":
        if verdict.status == "timeout":
            return t.program_timeout.format(limit=limit)
        err = _error(verdict.error_type, verdict.message, t.max_value_chars)
        tb = _traceback(verdict.traceback, t.max_traceback_lines)
        return t.program_error.format(error=err, traceback=tb)
    test = tests[failure.index] if 0 <= failure.index < len(tests) else None
    shown = show_test(test, failure)
    if failure.status == "timeout":
        return t.test_timeout.format(test=shown, limit=limit)
    if failure.status == "error":
        err = _error(failure.error_type, failure.message, t.max_value_chars)
        tb = _traceback(failure.traceback, t.max_traceback_lines)
        return t.test_error.format(test=shown, error=err, traceback=tb)
    return t.failed_test.format(
        test=shown,
        expected=_clip(failure.expected, t.max_value_chars),
        actual=_clip(failure.actual, t.max_value_chars),
    )


def first_user_message(problem_prompt: str, code: str, feedback: str, t: Templates) -> str:
    return t.first_user.format(
        problem=problem_prompt.strip(), code=code.rstrip(), feedback=feedback
    )


def next_user_message(feedback: str, t: Templates) -> str:
    return t.next_user.format(feedback=feedback)
