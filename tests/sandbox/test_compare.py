"""Trusted comparison and the value codec (no jail needed: both are plain functions)."""

from __future__ import annotations

import json
import math

import pytest

from sandbox.codec import DecodeError, decode
from sandbox.compare import matches
from sandbox.harness import EncodeError, encode


@pytest.mark.parametrize(
    ("actual", "expected", "atol", "ok"),
    [
        (3, 3, 0.0, True),
        (1, 1.0, 0.0, True),  # as Python's == (and the benchmarks' asserts) say
        (True, 1, 0.0, True),
        (0.1 + 0.2, 0.3, 0.0, False),
        (0.1 + 0.2, 0.3, 1e-9, True),
        ([1.0, (2.0, {"a": 3.0000001})], [1.0, (2.0, {"a": 3.0})], 1e-6, True),
        ([1.0, (2.0, {"a": 3.1})], [1.0, (2.0, {"a": 3.0})], 1e-6, False),
        ([1, 2], (1, 2), 0.0, False),
        ({1, 2}, {2, 1}, 0.0, True),
        (float("nan"), float("nan"), 0.0, True),
        (math.inf, math.inf, 0.0, True),
        (math.inf, 1e308, 1e300, False),
        ("3", 3, 0.0, False),
        (None, 0, 0.0, False),
        (1 + 1e-9j, 1, 1e-6, True),
        ({"a": 1}, {"a": 1, "b": 2}, 0.0, False),
    ],
)
def test_eq_oracle(actual, expected, atol, ok):
    assert matches(actual, expected, atol) is ok


def test_truthy_and_find_zero_oracles():
    assert matches([0], None, oracle="truthy") and not matches([], None, oracle="truthy")
    xs = [-6, 11, -6, 1]  # (x - 1)(x - 2)(x - 3)
    assert matches(2.0, xs, atol=1e-6, oracle="find_zero")
    assert matches(1.0000001, xs, atol=1e-4, oracle="find_zero")
    assert not matches(2.5, xs, atol=1e-6, oracle="find_zero")
    assert not matches("2", xs, oracle="find_zero")
    with pytest.raises(ValueError, match="unknown oracle 'close'"):
        matches(1, 1, oracle="close")


def roundtrip(value):
    return decode(json.loads(json.dumps(encode(value))))


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        -5,
        2**200,
        -(2**70),
        1.5,
        "é\x00",
        b"\xff",
        1j,
        [1, [2]],
        (1, (2,)),
        {1: (2,)},
        {"k": [{1, 2}]},
        frozenset({3}),
        (),
        [],
        {},
    ],
)
def test_codec_roundtrip(value):
    back = roundtrip(value)
    assert back == value and type(back) is type(value)


def test_codec_roundtrip_special_floats():
    nan, inf = roundtrip([float("nan"), float("-inf")])
    assert math.isnan(nan) and inf == -math.inf


class Sneaky(int):
    def __eq__(self, other):
        return True

    __hash__ = int.__hash__


@pytest.mark.parametrize("value", [Sneaky(1), [Sneaky(1)], {Sneaky(1): 1}, object(), range(3)])
def test_encoder_accepts_exact_builtin_types_only(value):
    with pytest.raises(EncodeError, match="cannot report a value of type"):
        encode(value)


def test_encoder_bounds_depth_and_size():
    deep: list = []
    for _ in range(200):
        deep = [deep]
    with pytest.raises(EncodeError, match="nested deeper"):
        encode(deep)
    loop: list = []
    loop.append(loop)
    with pytest.raises(EncodeError, match="nested deeper"):
        encode(loop)


@pytest.mark.parametrize("data", [{"x": 1}, {"t": 1}, {"s": [[1]]}, {"b": "***"}, {"a": 1, "b": 2}])
def test_decoder_rejects_malformed_reports(data):
    with pytest.raises(DecodeError):
        decode(data)
