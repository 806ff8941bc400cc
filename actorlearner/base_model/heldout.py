"""Held-out evaluation functions, generated from a small grammar with random names.

They are built on the fly from a seed and never appear in the training data (which
copies *corpus* functions), so a model can only reproduce them by reading its prompt.
"""

from __future__ import annotations

import ast
import random

from actorlearner.base_model.names import random_identifier


def _expr(rng: random.Random, names: list[str]) -> str:
    a, b = rng.choice(names), rng.choice(names)
    k = rng.randint(0, 9)
    return rng.choice(
        (
            f"{a} + {b}",
            f"{a} * {k}",
            f"{a} - {b} // {k + 1}",
            f"len({a})",
            f"abs({a} - {b})",
            f"max({a}, {b})",
            f"{a} % {k + 2}",
            f"min({a}, {k})",
        )
    )


def _cond(rng: random.Random, names: list[str]) -> str:
    a, b = rng.choice(names), rng.choice(names)
    op = rng.choice(("<", ">", "==", "!=", "<=", ">="))
    return rng.choice((f"{a} {op} {b}", f"{a} {op} {rng.randint(0, 9)}", f"not {a}"))


def _block(rng: random.Random, names: list[str], taken: set[str], depth: int) -> list[str]:
    lines: list[str] = []
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(("assign", "assign", "aug", "if", "for") if depth < 2 else ("assign",))
        if kind == "assign":
            new = random_identifier(rng, taken)
            taken.add(new)
            lines.append(f"{new} = {_expr(rng, names)}")
            names.append(new)
        elif kind == "aug":
            lines.append(f"{rng.choice(names)} += {_expr(rng, names)}")
        elif kind == "if":
            lines.append(f"if {_cond(rng, names)}:")
            lines += ["    " + s for s in _block(rng, list(names), taken, depth + 1)]
            if rng.random() < 0.5:
                lines.append("else:")
                lines += ["    " + s for s in _block(rng, list(names), taken, depth + 1)]
        else:
            var = random_identifier(rng, taken)
            taken.add(var)
            lines.append(f"for {var} in range({rng.choice(names)}):")
            lines += ["    " + s for s in _block(rng, [*names, var], taken, depth + 1)]
    return lines


def random_function(rng: random.Random) -> str:
    """A small, syntactically valid function with 1-3 arguments and fresh random names."""
    taken: set[str] = set()
    name = random_identifier(rng, taken)
    taken.add(name)
    args = []
    for _ in range(rng.randint(1, 3)):
        args.append(random_identifier(rng, taken))
        taken.add(args[-1])
    names = list(args)
    body = _block(rng, names, taken, 0) + [f"return {_expr(rng, names)}"]
    source = f"def {name}({', '.join(args)}):\n" + "\n".join("    " + s for s in body)
    return ast.unparse(ast.parse(source))  # canonical formatting, as in training


def heldout_functions(n: int, seed: int = 12345) -> list[str]:
    rng = random.Random(f"heldout-{seed}")
    return [random_function(rng) for _ in range(n)]
