"""Random pronounceable identifiers and identifier renaming.

Copy tasks use names that never occur in any corpus, so the only way to get them right
is to copy them from the prompt; memorised names cannot help. A model that only ever
copies made-up names learns to copy *those*; a share of tasks therefore re-draws names
from real code (`identifier_pool`) or keeps the function's own.
"""

from __future__ import annotations

import ast
import builtins
import keyword
import random

_ONSETS = "b c d f g h j k l m n p r s t v w z br cr dr fl gr pl pr st tr sk sn qu th sh ch".split()
_VOWELS = "a e i o u ai ea io ou y".split()
_CODAS = ["", "", "", "n", "r", "s", "l", "x", "m", "k", "rt", "nd", "sk"]
_RESERVED = set(keyword.kwlist) | set(dir(builtins)) | {"self", "cls"}


def random_word(rng: random.Random, min_syl: int = 1, max_syl: int = 2) -> str:
    syllables = rng.randint(min_syl, max_syl)
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)) + (
        rng.choice(_CODAS)
    )


def random_identifier(rng: random.Random, taken: set[str] | None = None) -> str:
    """A fresh snake_case name (1-2 made-up words) not in `taken` nor a Python builtin."""
    taken = taken or set()
    while True:
        parts = [random_word(rng) for _ in range(rng.choice((1, 2, 2, 3)))]
        name = "_".join(parts)
        if name not in _RESERVED and name not in taken and name.isidentifier():
            return name


def local_names(func: ast.FunctionDef) -> list[str]:
    """Function name, arguments and assigned locals, in order of first appearance."""
    names: list[str] = [func.name]
    for node in ast.walk(func):
        if isinstance(node, ast.arg):
            names.append(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.append(node.id)
    return [n for n in dict.fromkeys(names) if n not in _RESERVED]


class _Renamer(ast.NodeTransformer):
    def __init__(self, mapping: dict[str, str]):
        self.mapping = mapping

    def visit_Name(self, node: ast.Name) -> ast.Name:
        node.id = self.mapping.get(node.id, node.id)
        return node

    def visit_arg(self, node: ast.arg) -> ast.arg:
        node.arg = self.mapping.get(node.arg, node.arg)
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.FunctionDef:
        node.name = self.mapping.get(node.name, node.name)
        self.generic_visit(node)
        return node

    def visit_keyword(self, node: ast.keyword) -> ast.keyword:
        self.generic_visit(node)  # keyword names belong to the callee: keep them
        return node


def _pool_name(rng: random.Random, pool: list[str], taken: set[str]) -> str:
    for _ in range(20):
        name = rng.choice(pool)
        if name not in taken:
            return name
    return random_identifier(rng, taken)


def identifier_pool(functions: list[str]) -> list[str]:
    """Sorted local names (function, argument and variable names) of `functions`."""
    names: set[str] = set()
    for source in functions:
        try:
            func = ast.parse(source).body[0]
        except (SyntaxError, IndexError, RecursionError):
            continue
        if isinstance(func, ast.FunctionDef):
            names.update(local_names(func))
    return sorted(names)


def rename(source: str, mapping: dict[str, str]) -> str:
    """Rename identifiers (variables, arguments, function names) throughout `source`."""
    tree = ast.parse(source)
    return ast.unparse(_Renamer(mapping).visit(tree))


def randomize_names(
    source: str,
    rng: random.Random,
    drop_docstring: bool = True,
    pool: list[str] | None = None,
    keep: bool = False,
) -> str:
    """Give every local name of the (single) function in `source` a fresh name: a made-up
    one, or with `pool`, a real identifier drawn from it (other code's names); with `keep`,
    the names stay (only the docstring and formatting change)."""
    tree = ast.parse(source)
    func = tree.body[0]
    if not isinstance(func, ast.FunctionDef):
        raise ValueError("randomize_names expects source holding one function definition")
    if drop_docstring and ast.get_docstring(func) is not None and len(func.body) > 1:
        func.body = func.body[1:]
    taken: set[str] = set()
    mapping = {}
    for name in [] if keep else local_names(func):
        mapping[name] = _pool_name(rng, pool, taken) if pool else random_identifier(rng, taken)
        taken.add(mapping[name])
    return ast.unparse(_Renamer(mapping).visit(tree))
