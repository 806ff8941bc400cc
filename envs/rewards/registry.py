"""The reward-term registry: named callables that score one reply.

A term is ``fn(ctx: RewardContext, **options) -> float``; a term computed off the
calling thread may return a ``concurrent.futures.Future`` of its float. Register it with
``@reward_term("name", span="code")`` or expose it through the entry-point group
``actorlearner.reward_terms`` (``name = "pkg.module:function"``) so that installing a
package is enough. `span` says where a trainer places the value by default: at the
end of the explanation, the end of the code, or the last token of the reply ("turn").
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Literal, cast

from envs.problem import Problem
from envs.templates import ParsedReply
from sandbox.types import Verdict

Span = Literal["explanation", "code", "turn"]
SPANS: tuple[str, ...] = ("explanation", "code", "turn")
ENTRY_POINT_GROUP = "actorlearner.reward_terms"


@dataclass(frozen=True)
class References:
    """Verified fixes and the explanations that led to them (for similarity terms)."""

    codes: tuple[str, ...] = ()
    explanations: tuple[str, ...] = ()


@dataclass(frozen=True)
class RewardContext:
    """Everything a term may look at for one reply.

    `verdict` is None when the reply had no code (nothing was run). `turn` counts
    replies from 0. `previous_verdict` is the verdict of the code the reply fixes.
    """

    problem: Problem
    reply: ParsedReply
    verdict: Verdict | None
    turn: int
    references: References = field(default_factory=References)
    previous_verdict: Verdict | None = None


TermFn = Callable[..., "float | Future[float]"]


@dataclass(frozen=True)
class RewardTerm:
    name: str
    fn: TermFn
    span: Span
    doc: str = ""

    def __call__(self, ctx: RewardContext, **options: Any) -> float:
        value = self.start(ctx, **options)
        return float(value.result() if isinstance(value, Future) else value)

    def start(self, ctx: RewardContext, **options: Any) -> float | Future[float]:
        """The raw value, or a Future of it for a term computed elsewhere (the reward
        worker): a composite reward starts every term of a reply before waiting on any."""
        value = self.fn(ctx, **options)
        return value if isinstance(value, Future) else float(value)


_TERMS: dict[str, RewardTerm] = {}


def reward_term(name: str, span: Span = "turn") -> Callable[[TermFn], TermFn]:
    """Register `fn(ctx, **options) -> float` (or a `concurrent.futures.Future` of one) under
    `name`, placed on `span` by default."""
    if span not in SPANS:
        raise ValueError(f"reward term {name!r}: span must be one of {SPANS}, got {span!r}")

    def deco(fn: TermFn) -> TermFn:
        _TERMS[name] = RewardTerm(name, fn, span, inspect.getdoc(fn) or "")
        fn.reward_span = span  # type: ignore[attr-defined]  # read when loaded by entry point
        return fn

    return deco


def _load_entry_point(name: str) -> RewardTerm | None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            fn = ep.load()
            if name not in _TERMS:  # the module may have registered itself on import
                span = getattr(fn, "reward_span", "turn")
                if span not in SPANS:
                    raise ValueError(
                        f"reward term {name!r} ({ep.value}): span {span!r} not in {SPANS}"
                    )
                _TERMS[name] = RewardTerm(name, fn, cast(Span, span), inspect.getdoc(fn) or "")
            return _TERMS[name]
    return None


def get_term(name: str) -> RewardTerm:
    """The registered term `name` (built-ins, decorated terms, then entry points)."""
    import envs.rewards.terms  # noqa: F401  (registers the shipped terms)

    term = _TERMS.get(name) or _load_entry_point(name)
    if term is None:
        raise KeyError(
            f"unknown reward term {name!r}; available: {', '.join(available_terms())}. "
            f"Register one with @reward_term({name!r}) in a module a run config names in "
            f"`imports`, or through the entry-point group {ENTRY_POINT_GROUP!r}."
        )
    return term


def available_terms() -> list[str]:
    import envs.rewards.terms  # noqa: F401

    return sorted(set(_TERMS) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})
