"""The trusted harness that runs inside the jail (stdlib only, sent as source).

It executes the candidate program in a fresh namespace, evaluates each test
expression there and reports each *value* back as one JSON line on a private
channel. Expected values never enter the jail, so a candidate that forges the
channel, patches this module or exits early can only report values; the parent
decides pass/fail by comparing them with what it kept (see `sandbox.compare`).

Values are encoded by `encode`, which accepts only exact builtin types
(``type(x) is int``...), so objects with a rigged ``__eq__`` cannot be reported.

Inside the jail this source runs together with `sandbox.zygote`, which forks one
child per job and calls `run_tests` there.
"""

from __future__ import annotations

import base64
import json
import linecache
import os
import traceback

MAX_DEPTH = 100
MAX_ITEMS = 2_000_000
PROGRAM_FILE = "<candidate>"
TEST_FILE = "<test>"
HARNESS_FILE = "<harness>"  # the filename this source is compiled under in the jail


class EncodeError(Exception):
    """The value is not made of exact builtin types (or is too big/deep)."""


def encode(value, _depth=0, _budget=None):
    """Encode a value built only from exact builtin types into JSON-able data.

    JSON objects are used only as tags, so tuples, sets, dicts, bytes, complex and
    huge ints survive the trip: {"t": [...]}, {"s": [...]}, {"fs": [...]},
    {"d": [[k, v], ...]}, {"b": base64}, {"c": [re, im]}, {"n": hex}.
    """
    budget = _budget if _budget is not None else [MAX_ITEMS]
    budget[0] -= 1
    if budget[0] < 0:
        raise EncodeError(f"value too large (more than {MAX_ITEMS} items)")
    if _depth > MAX_DEPTH:
        raise EncodeError(f"value nested deeper than {MAX_DEPTH} levels")
    t = type(value)
    if value is None or t is bool or t is str or t is float:
        return value
    if t is int:
        return value if -(1 << 62) < value < (1 << 62) else {"n": hex(value)}
    d = _depth + 1
    if t is list:
        return [encode(v, d, budget) for v in value]
    if t is tuple:
        return {"t": [encode(v, d, budget) for v in value]}
    if t is set or t is frozenset:
        return {"s" if t is set else "fs": [encode(v, d, budget) for v in value]}
    if t is dict:
        return {"d": [[encode(k, d, budget), encode(v, d, budget)] for k, v in value.items()]}
    if t is bytes:
        return {"b": base64.b64encode(value).decode("ascii")}
    if t is complex:
        return {"c": [value.real, value.imag]}
    raise EncodeError(
        f"cannot report a value of type {t.__name__!r}; tests compare builtin values "
        "(int, float, str, bytes, bool, None, list, tuple, dict, set, complex)"
    )


def _safe_str(obj, limit=2000):
    try:
        text = str(obj)
    except BaseException:  # a candidate's __str__ may raise anything
        text = "<unprintable>"
    return text if len(text) <= limit else text[:limit] + "..."


def _exc_info(exc, limit=8):
    """(type name, message, short traceback) showing only candidate and test frames."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != HARNESS_FILE]
    frames = frames[-limit:]
    lines = ["Traceback (most recent call last):\n"]
    lines += traceback.format_list(frames)
    lines.append(f"{type(exc).__name__}: {_safe_str(exc)}\n")
    return [type(exc).__name__, _safe_str(exc), _safe_str("".join(lines), 4000)]


class Channel:
    """Writes JSON lines to a file descriptor the candidate's prints do not use."""

    def __init__(self, fd):
        self.fd = fd

    def send(self, msg):
        self.send_raw((json.dumps(msg, allow_nan=True) + "\n").encode("utf-8", "surrogatepass"))

    def send_raw(self, data):
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]


def run_tests(program, exprs, chan):
    """Exec the program, then evaluate each test expression and report its value."""
    linecache.cache[PROGRAM_FILE] = (len(program), None, program.splitlines(True), PROGRAM_FILE)
    namespace = {"__name__": "__candidate__", "__builtins__": __builtins__}
    try:
        exec(compile(program, PROGRAM_FILE, "exec"), namespace)
    except BaseException as exc:  # SyntaxError, crash at import, sys.exit() ...
        chan.send({"k": "program_error", "exc": _exc_info(exc)})
        return
    chan.send({"k": "loaded"})
    for i, expr in enumerate(exprs):
        try:
            value = eval(compile(expr, TEST_FILE, "eval"), namespace)
            msg = {"k": "value", "i": i, "v": encode(value)}
        except BaseException as exc:  # each test is independent; SystemExit included
            msg = {"k": "raised", "i": i, "exc": _exc_info(exc)}
        chan.send(msg)
    chan.send({"k": "done"})
