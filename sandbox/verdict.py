"""Turn a sandbox's raw reply into a trusted `Verdict`.

Everything in the reply's channel may have been written by the candidate, so it is
parsed defensively: only the first report per test counts, malformed lines (too
deep, numbers too long to parse in linear time) are ignored, anything that fails
while decoding or comparing a value fails that test, and pass/fail comes from
comparing decoded values with expected values that never left this process.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sandbox.codec import DecodeError, decode, short_repr
from sandbox.compare import matches
from sandbox.types import Limits, TestCase, TestOutcome, Verdict

EXIT_HINTS = {
    "SIGXCPU": "CPU time limit",
    "SIGKILL": "hard CPU/memory limit, or killed by itself",
    "SIGSEGV": "crashed (segmentation fault; deep recursion?)",
    "SIGXFSZ": "file size limit",
}


# The harness writes ints beyond 2**62 as hex and floats by repr, so longer decimal
# numbers are forged; refusing them keeps parsing linear (Python's int() is quadratic).
MAX_NUMBER_CHARS = 40


def _number(parse):
    def bounded(text: str) -> Any:
        if len(text) > MAX_NUMBER_CHARS:
            raise ValueError("number too long")
        return parse(text)

    return bounded


_DECODER = json.JSONDecoder(parse_int=_number(int), parse_float=_number(float))


def _load_line(line: str) -> Any:
    """One channel line as JSON, or None (malformed, too deep for the recursion limit)."""
    try:
        return _DECODER.decode(line)
    except (ValueError, RecursionError):
        return None


def parse_channel(text: str) -> tuple[dict[str, Any] | None, bool, dict[int, dict[str, Any]], bool]:
    """(program_error, loaded, reports by test index, done) from the channel's lines."""
    program_error = None
    loaded = done = False
    reports: dict[int, dict[str, Any]] = {}
    for line in text.splitlines():
        msg = _load_line(line)
        if type(msg) is not dict:
            continue
        kind = msg.get("k")
        if kind == "program_error" and not loaded and program_error is None:
            program_error = msg
        elif kind == "loaded":
            loaded = True
        elif kind in ("value", "raised") and type(msg.get("i")) is int:
            reports.setdefault(msg["i"], msg)
        elif kind == "done":
            done = True
    return program_error, loaded, reports, done


def build_verdict(
    tests: Sequence[TestCase], reply: dict[str, Any], limits: Limits, backend: str
) -> Verdict:
    program_error, loaded, reports, _ = parse_channel(reply.get("channel", ""))
    timed_out = bool(reply.get("timed_out"))
    exit_note = _exit_note(reply.get("exit"))
    if reply.get("truncated"):
        exit_note = "the reported values exceeded the sandbox's size limit"
    verdict = Verdict(
        status="passed",
        stdout=reply.get("output", ""),
        duration_s=float(reply.get("duration_s", 0.0)),
        backend=backend,
        timeout_s=limits.timeout_s,
    )
    outcomes = []
    for i, test in enumerate(tests):
        report = reports.get(i) if loaded else None
        outcomes.append(_outcome(i, test, report, timed_out, limits, exit_note))
    verdict.outcomes = outcomes
    if program_error is not None and not loaded:
        err = _exc_fields(program_error.get("exc"))
        verdict.status = "error"
        verdict.error_type, verdict.message, verdict.traceback = err
    elif reply.get("scratch_exceeded"):
        verdict.status, verdict.error_type = "error", "ScratchLimit"
        verdict.message = f"wrote more than {limits.scratch_bytes} bytes to its scratch dir"
    elif not reply.get("clean", True) or reply.get("cleanup_error"):
        verdict.status, verdict.error_type = "error", "Leftover"
        verdict.message = "left processes or files the sandbox could not remove: " + str(
            reply.get("cleanup_error") or "processes survived"
        )
    elif timed_out and (not loaded or any(o.status == "timeout" for o in outcomes)):
        verdict.status = "timeout"
        verdict.error_type = "Timeout"
        verdict.message = f"timed out after {limits.timeout_s:g} s"
    elif not loaded or any(o.status == "not_run" for o in outcomes):
        verdict.status = "error"
        verdict.error_type = "Crash"
        verdict.message = f"the program stopped before its tests finished ({exit_note})"
    elif not all(o.passed for o in outcomes):
        verdict.status = "failed"
    return verdict


def _outcome(
    i: int,
    test: TestCase,
    report: dict[str, Any] | None,
    timed_out: bool,
    limits: Limits,
    exit_note: str,
) -> TestOutcome:
    out = TestOutcome(index=i, status="passed", expr=test.expr)
    if test.has_expected and test.oracle in ("eq", "is"):
        out.expected = short_repr(test.expected)
    if report is None:
        out.status = "timeout" if timed_out else "not_run"
        out.message = f"timed out after {limits.timeout_s:g} s" if timed_out else exit_note
        return out
    if report["k"] == "raised":
        out.status = "error"
        out.error_type, out.message, out.traceback = _exc_fields(report.get("exc"))
        return out
    try:
        _judge(out, test, decode(report.get("v")))
    except Exception as exc:  # anything a reported value makes us raise fails its test
        out.value = out.actual = None
        out.status, out.error_type = "error", "BadReport"
        out.message = (
            str(exc) if isinstance(exc, DecodeError) else f"{type(exc).__name__} on its value"
        )
    return out


def _judge(out: TestOutcome, test: TestCase, value: Any) -> None:
    out.value, out.actual = value, short_repr(value)
    if test.has_expected and not matches(value, test.expected, test.atol, test.oracle):
        out.status = "failed"
    elif not test.has_expected and test.oracle == "truthy" and not value:
        out.status = "failed"


def _exc_fields(exc: Any) -> tuple[str, str, str]:
    if type(exc) is list and len(exc) == 3 and all(type(x) is str for x in exc):
        return exc[0], exc[1], exc[2]
    return "Error", "malformed error report", ""


def _exit_note(exit_desc: str | None) -> str:
    if not exit_desc:
        return "exited early"
    for sig, hint in EXIT_HINTS.items():
        if sig in exit_desc:
            return f"{exit_desc}: {hint}"
    return exit_desc
