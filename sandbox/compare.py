"""Trusted comparison of a candidate's reported value against the expected one.

Runs in the parent only: `actual` is a plain builtin value decoded from the sandbox's
report (never a candidate object), `expected` never left the parent. Equality follows
Python's `==` (as the benchmarks' own asserts do: ``1 == 1.0`` and ``True == 1`` hold),
except that floats compare within `atol` (plus a tiny `rtol`, as EvalPlus does) and NaN
equals NaN, recursively through lists, tuples and dict values. A value that cannot be
compared (an int too big for a float, say) is a mismatch, never an exception.
"""

from __future__ import annotations

import math
from typing import Any

ORACLES = ("eq", "is", "truthy", "find_zero")


def matches(
    actual: Any, expected: Any, atol: float = 0.0, oracle: str = "eq", rtol: float = 0.0
) -> bool:
    """True when `actual` satisfies the test.

    oracle="eq": `actual == expected`, floats within `atol`/`rtol`.
    oracle="is": `actual is expected`, for True, False and None (``assert f(x) is True``
    fails on 1, as in Python).
    oracle="truthy": `bool(actual)` (`expected` is ignored).
    oracle="find_zero": `expected` is the coefficient list ``xs`` of HumanEval/32's
    polynomial and `actual` the root the candidate found; passes when
    ``|poly(xs, actual)| <= atol`` (atol defaults to 1e-6 there).
    """
    if oracle == "eq":
        return _eq(actual, expected, atol, rtol)
    if oracle == "is":
        return actual is expected and any(expected is c for c in (True, False, None))
    if oracle == "truthy":
        return bool(actual)
    if oracle == "find_zero":
        return _is_root(actual, expected, atol or 1e-6)
    raise ValueError(f"unknown oracle {oracle!r}; use one of {', '.join(ORACLES)}")


def poly(xs: list[float], x: float) -> float:
    """Evaluate the polynomial ``xs[0] + xs[1] * x + xs[2] * x**2 + ...``."""
    return sum(c * x**i for i, c in enumerate(xs))


def _is_root(x: Any, xs: Any, atol: float) -> bool:
    if type(x) not in (int, float) or not isinstance(xs, list | tuple):
        return False
    try:
        return abs(poly(list(xs), x)) <= atol
    except (OverflowError, TypeError):
        return False


def _is_number(x: Any) -> bool:
    return type(x) in (int, float, bool)


def _eq(a: Any, b: Any, atol: float, rtol: float) -> bool:
    if type(a) is float or type(b) is float:
        if not (_is_number(a) and _is_number(b)):
            return False
        try:
            return _float_eq(float(a), float(b), atol, rtol)
        except OverflowError:  # an int beyond any float equals no finite float
            return False
    if type(a) is complex or type(b) is complex:
        return _complex_eq(a, b, atol, rtol)
    if isinstance(a, list) and isinstance(b, list) or isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_eq(x, y, atol, rtol) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_eq(a[k], b[k], atol, rtol) for k in a)
    try:
        return bool(a == b)
    except Exception:  # e.g. comparing exotic expected values; a mismatch, not a crash
        return False


def _complex_eq(a: Any, b: Any, atol: float, rtol: float) -> bool:
    kinds = (int, float, bool, complex)
    if type(a) not in kinds or type(b) not in kinds:
        return False
    try:
        ca, cb = complex(a), complex(b)
    except OverflowError:
        return False
    return _float_eq(ca.real, cb.real, atol, rtol) and _float_eq(ca.imag, cb.imag, atol, rtol)


def _float_eq(a: float, b: float, atol: float, rtol: float) -> bool:
    if a == b or (math.isnan(a) and math.isnan(b)):
        return True
    if math.isinf(a) or math.isinf(b):
        return False
    return abs(a - b) <= atol + rtol * abs(b)
