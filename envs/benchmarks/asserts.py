"""Turn benchmark `assert` statements into trusted (expression, expected) tests.

An assert run inside the candidate's process can be faked (an `__eq__` that is always
True, a patched `AssertionError`). So each assert becomes a `TestCase` whose `expr` is
evaluated in the sandbox and whose `expected` value stays with the trusted parent:

- `assert EXPR == LITERAL` (either side)      -> eq test, expected = the literal
- `assert math.isclose(EXPR, LIT, rel_tol=r, abs_tol=a)` -> eq test, atol = max(r*|LIT|/(1-r), a)
- `assert abs(EXPR - LIT) < TOL`               -> eq test, atol = TOL (LIT an expression: pending)
- `assert EXPR is True|False|None`           -> "is" test (identity, as Python checks it)
- `assert EXPR == OTHER` (OTHER not a literal, e.g. `set((4, 5))`) -> eq test whose
  expected value is OTHER evaluated against the reference solution (`expected_expr`)
- `assert EXPR` / `assert not EXPR`           -> eq test of `not not (EXPR)` against True /
  False: the same expression either way, so it does not tell the candidate which truth
  value passes (a truthy test of `not (EXPR)` did)
- `assert A == B` with the candidate on both sides -> eq test of A against the
  reference's value of A (`value_expr`); truthy test of the comparison without one
- other conditions (`f(x) > 3`, `a and b`) -> truthy test, which the candidate's objects
  can rig (rigged operators); `resolve_tests` warns about problems that keep them

A dict literal is compared with `{**(EXPR)}`, so Counter/defaultdict results compare as
`==` does in Python.

The math.isclose rule accepts every value isclose accepts (and, below the expected
value, up to a factor 1/(1 - rel_tol) more).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from envs.benchmarks.values import from_source, is_literal
from sandbox.types import TestCase


@dataclass(frozen=True)
class ConvertedTest:
    """A test, plus the expression whose reference value is its expected output (if pending)."""

    case: TestCase
    expected_expr: str | None = None  # evaluate against the reference to fill `case.expected`
    # For a truthy `case`: with a reference, an eq test of this expression against the
    # reference's value of it replaces `case`.
    value_expr: str | None = None

    @property
    def pending(self) -> bool:
        return self.expected_expr is not None


class AssertConversionError(ValueError):
    """The text is not a single `assert` statement."""


def convert_assert(source: str, candidate: str | None = None) -> ConvertedTest:
    """Convert one `assert ...` statement (source text) into a trusted test.

    `candidate` names the function under test: an assert that compares it with itself
    (`f(x) == g(f(y))`) is kept as a truthy test of the whole comparison, as written.
    """
    text = source.strip()
    try:
        module = ast.parse(text)
    except SyntaxError as exc:
        raise AssertConversionError(f"not valid Python: {text!r:.120} ({exc.msg})") from exc
    if len(module.body) != 1 or not isinstance(module.body[0], ast.Assert):
        raise AssertConversionError(f"expected one `assert` statement, got: {text!r:.120}")
    return convert_test_expr(module.body[0].test, display=text, candidate=candidate)


def convert_test_expr(test: ast.expr, display: str, candidate: str | None = None) -> ConvertedTest:
    """Convert the condition of an assert (an AST expression) into a trusted test."""
    for rule in (_equality, _isclose, _abs_difference, _identity):
        converted = rule(test, display)
        if converted is None:
            continue
        if converted.pending and candidate and _calls(converted.expected_expr, candidate):
            if rule is _equality:  # `f(x) == f(y)`: A's value must be the reference's A
                return _truthy(test, display, value_expr=converted.case.expr)
            break  # the "expected" side runs the candidate too: keep the comparison whole
        return converted
    operand, claim = test, True
    while isinstance(operand, ast.UnaryOp) and isinstance(operand.op, ast.Not):
        operand, claim = operand.operand, not claim
    if isinstance(operand, (ast.Compare, ast.BoolOp, ast.BinOp, ast.UnaryOp)):
        return _truthy(test, display)  # operators the candidate's objects could rig
    # `assert X` and `assert not X` send the same expression: it no longer tells which
    # truth value passes (`not not` is Python's own truth test; a re.Match reports too).
    return ConvertedTest(TestCase(f"not not ({ast.unparse(operand)})", claim, display=display))


def _truthy(test: ast.expr, display: str, value_expr: str | None = None) -> ConvertedTest:
    """A truthy test of the assert's condition (`not (...)` runs in the sandbox; a
    `not not` is Python's own truth test, so a re.Match or any object reports a bool)."""
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        expr = f"not ({ast.unparse(test.operand)})"
    else:
        expr = f"not not ({ast.unparse(test)})"
    case = TestCase(expr, True, oracle="truthy", display=display)
    return ConvertedTest(case, value_expr=value_expr)


def _calls(expr: str | None, name: str) -> bool:
    return expr is not None and any(
        isinstance(n, ast.Name) and n.id == name for n in ast.walk(ast.parse(expr, mode="eval"))
    )


def _value_and_other(a: ast.expr, b: ast.expr) -> tuple[ast.expr, ast.expr] | None:
    """(the expression under test, the literal) when exactly one side is a literal."""
    if is_literal(b) and not is_literal(a):
        return a, b
    if is_literal(a) and not is_literal(b):
        return b, a
    return None


def _equality(test: ast.expr, display: str) -> ConvertedTest | None:
    if not (
        isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)
    ):
        return None
    left, right = test.left, test.comparators[0]
    pair = _value_and_other(left, right)
    if pair is not None:
        expr, lit = pair
        expected = _literal(lit)
        return ConvertedTest(
            TestCase(_as_compared(ast.unparse(expr), expected), expected, display=display)
        )
    return ConvertedTest(
        TestCase(ast.unparse(left), display=display), expected_expr=ast.unparse(right)
    )


def _identity(test: ast.expr, display: str) -> ConvertedTest | None:
    if not (
        isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Is)
    ):
        return None
    right = test.comparators[0]
    if isinstance(right, ast.Constant) and right.value in (True, False, None):
        case = TestCase(ast.unparse(test.left), right.value, oracle="is", display=display)
        return ConvertedTest(case)
    return None


def _isclose(test: ast.expr, display: str) -> ConvertedTest | None:
    if not (isinstance(test, ast.Call) and ast.unparse(test.func) in ("math.isclose", "isclose")):
        return None
    if len(test.args) != 2:
        return None
    pair = _value_and_other(*test.args)
    if pair is None:
        return None
    expr, lit = pair
    expected = _literal(lit)
    tol = {kw.arg: _literal(kw.value) for kw in test.keywords if kw.arg and is_literal(kw.value)}
    if set(tol) - {"rel_tol", "abs_tol"} or len(tol) != len(test.keywords):
        return None
    rel, absolute = tol.get("rel_tol", 1e-9), tol.get("abs_tol", 0.0)
    # isclose: |a - b| <= max(rel * max(|a|, |b|), abs_tol); the widest |a - b| that can
    # satisfy it for a given b is rel * |b| / (1 - rel).
    atol = max(rel * abs(expected) / (1 - rel), absolute)
    return ConvertedTest(TestCase(ast.unparse(expr), expected, atol=atol, display=display))


def _abs_difference(test: ast.expr, display: str) -> ConvertedTest | None:
    """`abs(A - B) < TOL` (or `<=`) with one of A, B a literal."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1):
        return None
    if not isinstance(test.ops[0], (ast.Lt, ast.LtE)) or not is_literal(test.comparators[0]):
        return None
    call = test.left
    if not (isinstance(call, ast.Call) and ast.unparse(call.func) == "abs" and len(call.args) == 1):
        return None
    diff = call.args[0]
    if not (isinstance(diff, ast.BinOp) and isinstance(diff.op, ast.Sub)):
        return None
    atol = float(_literal(test.comparators[0]))
    pair = _value_and_other(diff.left, diff.right)
    if pair is None:  # `abs(f(x) - 6.0 / 5.0) < tol`: the reference computes the right side
        case = TestCase(ast.unparse(diff.left), atol=atol, display=display)
        return ConvertedTest(case, expected_expr=ast.unparse(diff.right))
    expr, lit = pair
    return ConvertedTest(TestCase(ast.unparse(expr), _literal(lit), atol=atol, display=display))


def _as_compared(expr: str, expected) -> str:
    """`==` against a dict holds for any dict subclass (Counter, defaultdict), which the
    sandbox reports only as a plain dict: `{**(...)}` makes one without a name lookup."""
    return f"{{**({expr})}}" if isinstance(expected, dict) else expr


def _literal(node: ast.expr):
    return from_source(ast.unparse(node))
