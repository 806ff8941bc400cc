"""Composite reward: a weighted sum of registered terms, each placed on a span.

Configured as a preset name or a list of term configs
``{"name", "weight", "span"?, "options"?, "label"?}``. Every term's weighted
contribution is kept under its label (default: its name), so that terms are logged
one by one and add up to the total.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from envs.rewards.registry import SPANS, RewardContext, RewardTerm, get_term

# LeDex (NeurIPS 2024): R_code = 5 * (CodeBLEU + pass_rate) - 5 on the code's last token,
# R_expl = (50 * cos - 35) / 3 on the explanation's last token. The code ends the reply,
# so its reward sits on the reply's last token ("turn"), as in the paper.
PRESETS: dict[str, list[dict[str, Any]]] = {
    "ledex": [
        {"name": "codebleu", "weight": 5.0, "span": "turn"},
        {"name": "pass_rate", "weight": 5.0, "span": "turn"},
        {"name": "constant", "weight": -5.0, "span": "turn", "label": "code_offset"},
        {"name": "explanation_similarity", "weight": 50.0 / 3.0, "span": "explanation"},
        {
            "name": "constant",
            "weight": -35.0 / 3.0,
            "span": "explanation",
            "label": "explanation_offset",
        },
    ],
    # Cheap, reference-free: no CodeBLEU, no embedding model (the CPU default).
    "tests": [
        {"name": "pass_rate", "weight": 1.0},
        {"name": "all_passed", "weight": 1.0},
        {"name": "format", "weight": 1.0},
        {"name": "turn_cost", "weight": 0.1},
    ],
    "sparse": [
        {"name": "all_passed", "weight": 1.0},
        {"name": "format", "weight": 1.0},
    ],
}


@dataclass(frozen=True)
class TermConfig:
    name: str
    weight: float = 1.0
    span: str | None = None  # None: the term's declared span
    options: dict[str, Any] = field(default_factory=dict)
    label: str | None = None  # logging key; needed when one term is used twice

    @property
    def key(self) -> str:
        return self.label or self.name


@dataclass(frozen=True)
class RewardResult:
    total: float
    terms: dict[str, float]  # label -> weighted contribution (sums to total)
    raw: dict[str, float]  # label -> raw term value
    by_span: dict[str, float]  # "explanation" | "code" | "turn" -> summed contribution


def _term_config(item: Any) -> TermConfig:
    if isinstance(item, TermConfig):
        return item
    if isinstance(item, str):
        return TermConfig(name=item)
    if not isinstance(item, Mapping) or "name" not in item:
        raise ValueError(
            f"reward term config {item!r} must be a term name or a mapping with 'name' "
            "(and optional 'weight', 'span', 'options', 'label')"
        )
    extra = sorted(set(item) - {"name", "weight", "span", "options", "label"})
    if extra:
        raise ValueError(f"reward term {item['name']!r}: unknown config key(s) {extra}")
    return TermConfig(
        name=str(item["name"]),
        weight=float(item.get("weight", 1.0)),
        span=item.get("span"),
        options=dict(item.get("options") or {}),
        label=item.get("label"),
    )


class CompositeReward:
    """Weighted sum of terms; call with a RewardContext to get a RewardResult."""

    def __init__(self, config: str | Sequence[Any]):
        if isinstance(config, str):
            if config not in PRESETS:
                raise KeyError(
                    f"unknown reward preset {config!r}; presets: {', '.join(sorted(PRESETS))} "
                    "(or pass a list of term configs)"
                )
            config = PRESETS[config]
        self.configs = [_term_config(c) for c in config]
        if not self.configs:
            raise ValueError("a reward needs at least one term")
        keys = [c.key for c in self.configs]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise ValueError(f"reward terms {dupes} appear twice; give each a distinct 'label'")
        self.terms: list[RewardTerm] = [get_term(c.name) for c in self.configs]
        for c, t in zip(self.configs, self.terms, strict=True):
            if self.span_of(c, t) not in SPANS:
                raise ValueError(
                    f"reward term {c.key!r}: span must be one of {SPANS}, got {c.span!r}"
                )

    @staticmethod
    def span_of(config: TermConfig, term: RewardTerm) -> str:
        return config.span or term.span

    def __call__(self, ctx: RewardContext) -> RewardResult:
        return self.start(ctx)[1].result()

    def start(self, ctx: RewardContext) -> tuple[float, Future[RewardResult]]:
        """Start every term; return the weighted sum of those already computed and a
        Future of the whole result. Terms in the reward worker run while the others do
        (and, for a caller that does not wait, while it generates)."""
        values = [t.start(ctx, **c.options) for c, t in zip(self.configs, self.terms, strict=True)]
        known = sum(
            c.weight * v
            for c, v in zip(self.configs, values, strict=True)
            if not isinstance(v, Future)
        )
        futures = [v for v in values if isinstance(v, Future)]
        return known, when_all(futures, lambda: self._combine(values))

    def _combine(self, values: Sequence[float | Future[float]]) -> RewardResult:
        raw, terms, by_span = {}, {}, dict.fromkeys(SPANS, 0.0)
        for c, t, v in zip(self.configs, self.terms, values, strict=True):
            value = float(v.result()) if isinstance(v, Future) else v
            raw[c.key] = value
            terms[c.key] = c.weight * value
            by_span[self.span_of(c, t)] += c.weight * value
        return RewardResult(sum(terms.values()), terms, raw, by_span)


def when_all(futures: Sequence[Future], combine: Callable[[], Any]) -> Future:
    """A Future of `combine()`, run once every one of `futures` is done (at once if none)."""
    out: Future = Future()
    left = [len(futures) + 1]  # the extra count is released once every callback is set
    lock = threading.Lock()

    def release(_: Future | None = None) -> None:
        with lock:
            left[0] -= 1
            if left[0] > 0:
                return
        try:
            out.set_result(combine())
        except BaseException as exc:  # a failed term fails the reward, not the caller
            out.set_exception(exc)

    for f in futures:
        f.add_done_callback(release)
    release()
    return out
