"""Held-out evaluation functions, generated from a small grammar with random names.

They are built on the fly from a seed and never appear in the training data (which
copies *corpus* functions), so a model can only reproduce them by reading its prompt.
Names are made-up words, or (`natural=True`) everyday identifiers such as the ones
downstream tasks use; a model must copy both kinds.
"""

from __future__ import annotations

import ast
import random

from actorlearner.base_model.names import random_identifier

# Everyday identifier words for the natural-name variant.
NATURAL_WORDS = (
    "total count items values result index data size left right start stop step limit "
    "low high first last prev current node key value text line word words char pos offset "
    "width height scale factor amount price rate score scores level depth row col grid "
    "out buf acc best worst target source dest name names label parts chunk block mask "
    "flag found seen visited queue stack path cost weight"
).split()


def _natural_identifier(rng: random.Random, taken: set[str]) -> str:
    for _ in range(50):
        name = rng.choice(NATURAL_WORDS)
        if rng.random() < 0.3:
            name = f"{name}_{rng.choice(NATURAL_WORDS)}"
        if name not in taken:
            return name
    return random_identifier(rng, taken)


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


def _block(
    rng: random.Random, names: list[str], taken: set[str], depth: int, fresh=random_identifier
) -> list[str]:
    lines: list[str] = []
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(("assign", "assign", "aug", "if", "for") if depth < 2 else ("assign",))
        if kind == "assign":
            new = fresh(rng, taken)
            taken.add(new)
            lines.append(f"{new} = {_expr(rng, names)}")
            names.append(new)
        elif kind == "aug":
            lines.append(f"{rng.choice(names)} += {_expr(rng, names)}")
        elif kind == "if":
            lines.append(f"if {_cond(rng, names)}:")
            lines += ["    " + s for s in _block(rng, list(names), taken, depth + 1, fresh)]
            if rng.random() < 0.5:
                lines.append("else:")
                lines += ["    " + s for s in _block(rng, list(names), taken, depth + 1, fresh)]
        else:
            var = fresh(rng, taken)
            taken.add(var)
            lines.append(f"for {var} in range({rng.choice(names)}):")
            lines += ["    " + s for s in _block(rng, [*names, var], taken, depth + 1, fresh)]
    return lines


def random_function(rng: random.Random, natural: bool = False) -> str:
    """A small, syntactically valid function with 1-3 arguments and fresh names."""
    fresh = _natural_identifier if natural else random_identifier
    taken: set[str] = set()
    name = fresh(rng, taken)
    taken.add(name)
    args = []
    for _ in range(rng.randint(1, 3)):
        args.append(fresh(rng, taken))
        taken.add(args[-1])
    names = list(args)
    body = _block(rng, names, taken, 0, fresh) + [f"return {_expr(rng, names)}"]
    source = f"def {name}({', '.join(args)}):\n" + "\n".join("    " + s for s in body)
    return ast.unparse(ast.parse(source))  # canonical formatting, as in training


def heldout_functions(n: int, seed: int = 12345, natural: bool = False) -> list[str]:
    rng = random.Random(f"heldout-{seed}" + ("-natural" if natural else ""))
    return [random_function(rng, natural) for _ in range(n)]
