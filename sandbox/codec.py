"""Parent-side decoding of the values the harness reports (see `harness.encode`).

The input is untrusted (a candidate may write to the channel), so decoding only
builds plain builtin values and rejects anything malformed with `DecodeError`.
"""

from __future__ import annotations

import base64
import reprlib
from typing import Any


class _BoundedRepr(reprlib.Repr):
    """reprlib's bounded repr, also for ints too long for `str()` (Python refuses to
    print ints over 4300 digits: a candidate could return one to crash the feedback)."""

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 4000 * 3.3:
            return f"<int of about {int(x.bit_length() * 0.30103)} digits>"
        return super().repr_int(x, level)


_repr = _BoundedRepr()
_repr.maxstring = 200
_repr.maxother = 200
_repr.maxlist = _repr.maxtuple = _repr.maxset = _repr.maxfrozenset = _repr.maxdict = 20
_repr.maxlevel = 6


class DecodeError(ValueError):
    """The reported data is not a valid encoded value."""


def decode(data: Any, depth: int = 0) -> Any:
    if depth > 200:
        raise DecodeError("value nested too deeply")
    if data is None or type(data) in (bool, int, float, str):
        return data
    if type(data) is list:
        return [decode(v, depth + 1) for v in data]
    if type(data) is not dict or len(data) != 1:
        raise DecodeError(f"malformed value: {short_repr(data)}")
    ((tag, body),) = data.items()
    try:
        return _decode_tagged(tag, body, depth + 1)
    except (TypeError, ValueError, OverflowError) as exc:  # e.g. complex(10**400, 0)
        raise DecodeError(f"malformed {tag!r} value: {exc}") from None


def _decode_tagged(tag: str, body: Any, depth: int) -> Any:
    if tag == "t":
        return tuple(decode(v, depth) for v in _as_list(body))
    if tag == "s":
        return {decode(v, depth) for v in _as_list(body)}
    if tag == "fs":
        return frozenset(decode(v, depth) for v in _as_list(body))
    if tag == "d":
        return {decode(k, depth): decode(v, depth) for k, v in _as_list(body)}
    if tag == "b" and type(body) is str:
        return base64.b64decode(body, validate=True)
    if tag == "c":
        re, im = _as_list(body)
        return complex(float(re), float(im))
    if tag == "n" and type(body) is str:
        return int(body, 16)
    raise DecodeError(f"unknown value tag {tag!r}")


def _as_list(body: Any) -> list:
    if type(body) is not list:
        raise TypeError("expected a list")
    return body


def short_repr(value: Any) -> str:
    """A bounded repr for feedback messages ("expected 3, got 4")."""
    return _repr.repr(value)
