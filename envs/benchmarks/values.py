"""Python values <-> source text, safely.

Test inputs travel to the sandbox as expression text, and expected outputs are cached
on disk as text, so both need a faithful, *safe* round trip: `to_source` writes source
that rebuilds a value (tuples, sets, complex, inf/nan included) and `from_source` reads
it back without executing anything (an extended `ast.literal_eval`).
"""

from __future__ import annotations

import ast
import math
from typing import Any

_SPECIAL_FLOATS = {"inf": math.inf, "nan": math.nan}


class NotALiteral(ValueError):
    """Raised when text is not a literal value `from_source` can rebuild."""


def to_source(value: Any) -> str:
    """Source text that evaluates to `value` (raises TypeError for non-literal values)."""
    if isinstance(value, float):
        if math.isnan(value):
            return "float('nan')"
        if math.isinf(value):
            return "float('inf')" if value > 0 else "-float('inf')"
        return repr(value)
    if type(value) is int and value.bit_length() > 10_000:
        return hex(value)  # decimal text of huge ints is refused (and slow); hex is neither
    if value is None or isinstance(value, (bool, int, str, bytes)):
        return repr(value)
    if isinstance(value, complex):
        return f"complex({to_source(value.real)}, {to_source(value.imag)})"
    if isinstance(value, list):
        return "[" + ", ".join(map(to_source, value)) + "]"
    if isinstance(value, tuple):
        items = ", ".join(map(to_source, value))
        return f"({items},)" if len(value) == 1 else f"({items})"
    if isinstance(value, (set, frozenset)):
        items = ", ".join(sorted(map(to_source, value)))
        name = type(value).__name__
        if not value:
            return f"{name}()"
        return "{" + items + "}" if name == "set" else f"frozenset({{{items}}})"
    if isinstance(value, dict):
        pairs = ", ".join(f"{to_source(k)}: {to_source(v)}" for k, v in value.items())
        return "{" + pairs + "}"
    raise TypeError(f"cannot write a {type(value).__name__} as a literal: {value!r:.80}")


def from_source(text: str) -> Any:
    """Rebuild a value from `to_source` output or a `repr` (inf/nan names allowed)."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise NotALiteral(f"not a Python literal: {text!r:.80}") from exc
    return _build(tree.body, text)


def is_literal(node: ast.AST) -> bool:
    """True when `node` is a value `from_source` can rebuild without running code."""
    try:
        _build(node, "")
    except NotALiteral:
        return False
    return True


def _build(node: ast.AST, text: str) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name) and node.id in _SPECIAL_FLOATS:
        return _SPECIAL_FLOATS[node.id]
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        items = [_build(e, text) for e in node.elts]
        return {ast.List: list, ast.Tuple: tuple, ast.Set: set}[type(node)](items)
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise NotALiteral(f"dict unpacking is not a literal: {text!r:.80}")
        pairs = zip(node.keys, node.values, strict=True)
        return {_build(k, text): _build(v, text) for k, v in pairs if k is not None}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        operand = _build(node.operand, text)
        if isinstance(operand, (int, float, complex)) and not isinstance(operand, bool):
            return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
        left, right = _build(node.left, text), _build(node.right, text)
        if isinstance(right, complex) and isinstance(left, (int, float)):
            return left + right if isinstance(node.op, ast.Add) else left - right
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        return _build_call(node.func.id, [_build(a, text) for a in node.args], text)
    raise NotALiteral(f"not a literal value: {ast.unparse(node)[:80]!r}")


def _build_call(name: str, args: list[Any], text: str) -> Any:
    if name == "float" and len(args) == 1 and isinstance(args[0], str):
        if args[0].strip().lower().lstrip("+-") in ("inf", "infinity", "nan"):
            return float(args[0])
    if name == "complex" and len(args) == 2 and all(isinstance(a, (int, float)) for a in args):
        return complex(args[0], args[1])
    if name in ("set", "frozenset", "tuple") and len(args) <= 1:
        items = args[0] if args else ()
        if isinstance(items, (list, tuple, set, frozenset)):
            return {"set": set, "frozenset": frozenset, "tuple": tuple}[name](items)
    raise NotALiteral(f"call {name}(...) is not a literal: {text!r:.80}")
