"""Identical-solution detection: the paper counts *unique* solutions."""

from __future__ import annotations

import ast
import re
import warnings


def normalize_code(code: str) -> str:
    """A canonical form: the unparsed AST (drops comments, formatting, docstring quotes style);
    for code that does not parse, the code with whitespace runs collapsed."""
    try:
        with warnings.catch_warnings():  # e.g. invalid escape sequences in model output
            warnings.simplefilter("ignore")
            return ast.unparse(ast.parse(code))
    except (SyntaxError, ValueError, RecursionError):
        lines = (re.sub(r"[ \t]+", " ", ln).rstrip() for ln in code.strip().splitlines())
        return "\n".join(ln for ln in lines if ln)


def normalize_text(text: str) -> str:
    return " ".join(text.split())


def unique(items: list[str], key=normalize_code) -> list[tuple[str, int]]:
    """First occurrence of each distinct item (by `key`), in order, with its count."""
    seen: dict[str, int] = {}
    out: list[list] = []
    for item in items:
        k = key(item)
        if k in seen:
            out[seen[k]][1] += 1
        else:
            seen[k] = len(out)
            out.append([item, 1])
    return [(item, count) for item, count in out]
