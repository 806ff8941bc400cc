"""Problem sources by name: `load_problems("mbpp:train")`, `load_problems("synthetic:test")`,
or a path to a JSONL file in the generic problem format.

Sources register themselves with `@register_source("name")`; a loader takes the split
(the part after ':' or None) and keyword options and returns a list of `Problem`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from envs.problem import Problem

Loader = Callable[..., list[Problem]]
_SOURCES: dict[str, Loader] = {}
# Modules that register the built-in sources when first needed (lazy: data loads on demand).
_BUILTIN_MODULES = ("envs.benchmarks", "envs.synthetic_bugs")


def register_source(name: str) -> Callable[[Loader], Loader]:
    def deco(fn: Loader) -> Loader:
        _SOURCES[name] = fn
        return fn

    return deco


def available_sources() -> list[str]:
    _import_builtins()
    return sorted(_SOURCES)


def _import_builtins() -> None:
    for mod in _BUILTIN_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise


def load_problems(spec: str, **options) -> list[Problem]:
    """Load problems from `name[:split]` or from a generic-format JSONL path."""
    if spec.endswith((".jsonl", ".jsonl.gz")) or Path(spec).is_file():
        from envs.benchmarks.generic import load_generic_jsonl

        return load_generic_jsonl(spec)
    name, _, split = spec.partition(":")
    _import_builtins()
    if name not in _SOURCES:
        raise KeyError(
            f"unknown problem source {name!r}; available: {', '.join(sorted(_SOURCES))} "
            "(or give a path to a JSONL file in the generic problem format)"
        )
    return _SOURCES[name](split or None, **options)
