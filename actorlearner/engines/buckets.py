"""Greedy generation of a batch in calls of prompts of similar length.

A batched decoding step attends over the batch's longest context for every row (left
padding), and on CPU that read of the KV cache is most of a step's time. With
multi-turn prompts of 500 to 950 tokens, two length-sorted calls read about a fifth
less than one (measured: an evaluation shard of 60 episodes, 38.2 s -> 35.1 s, the same
tokens). Greedy only: seeded sampling would draw the same numbers in every call.
"""

from __future__ import annotations

from typing import Any

from actorlearner.engines.base import Engine, Generation, SamplingParams


class LengthBuckets:
    """Wraps an engine: a greedy batch of at least `min_rows` goes out as `n` calls,
    shortest prompts first; everything else is the wrapped engine's."""

    def __init__(self, engine: Engine, n: int = 2, min_rows: int = 8):
        self.engine = engine
        self.n = n
        self.min_rows = min_rows

    def __getattr__(self, name: str) -> Any:  # tokenizer, max_positions, ...
        return getattr(self.engine, name)

    @property
    def version(self) -> int:
        return self.engine.version

    @version.setter
    def version(self, value: int) -> None:
        self.engine.version = value

    def generate(self, prompts: list[list[int]], sampling: SamplingParams) -> list[Generation]:
        if sampling.temperature > 0 or self.n < 2 or len(prompts) < self.min_rows:
            return self.engine.generate(prompts, sampling)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        size = -(-len(order) // self.n)
        out: list[Generation | None] = [None] * len(prompts)
        for start in range(0, len(order), size):
            part = order[start : start + size]
            gens = self.engine.generate([prompts[i] for i in part], sampling)
            for i, gen in zip(part, gens, strict=True):
                out[i] = gen
        return [g for g in out if g is not None]

    def load_weights(self, state_dict: dict[str, Any], version: int) -> None:
        self.engine.load_weights(state_dict, version)
