"""Reuse of the KV states of a multi-turn episode's earlier turns (HF engine).

A multi-turn episode's next prompt is its last prompt, the reply just generated and
the env's feedback. Without reuse, every turn prefills the whole context again (with a
6M model on one CPU thread, the third round's prefill of 48 rows x ~900 tokens took a
third of that round). With a `PrefixCache`, the engine keeps each finished row's KV
states keyed by its tokens; a later prompt that starts with those tokens prefills only
the rest. New episodes of one call that start alike (a system prompt) prefill that
start once and each reuses it (`shared`: 57 of ~240 tokens of a tiny-run prompt). The
reused states are the same keys and values up to float rounding (they were computed in
another batch), so greedy replies can differ only where two tokens tie to within that
rounding.

Only for an engine whose weights stay fixed between the calls (evaluation): the
engine clears the cache when it loads weights.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from actorlearner.engines.kv_cache import GrowingLayer

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values [heads, tokens, dim]


class PrefixCache:
    """The KV states of recently finished rows, keyed by the tokens they cover, and of
    the start that new episodes share (a system prompt, the instructions: `shared`)."""

    def __init__(self, max_age: int = 4, max_shared: int = 4):
        # generate calls an entry waits for its next turn: a round may be several calls
        # (the runner's two halves, length buckets)
        self.max_age = max_age
        self.max_shared = max_shared
        self.calls = 0
        self.entries: dict[tuple[int, ...], tuple[int, KV]] = {}
        self.shared: dict[tuple[int, ...], KV] = {}  # kept until cleared, never taken

    def clear(self) -> None:
        self.entries.clear()
        self.shared.clear()

    def take(self, prompt: list[int]) -> tuple[int, KV] | None:
        """The longest stored prefix of `prompt` that leaves a token to feed (a row's
        entry is removed, a shared start stays)."""
        for n in sorted({len(k) for k in (*self.entries, *self.shared)}, reverse=True):
            if n >= len(prompt):
                continue
            key = tuple(prompt[:n])
            if key in self.entries:
                return n, self.entries.pop(key)[1]
            if key in self.shared:
                return n, self.shared[key]
        return None

    def covers(self, prompt: list[int]) -> int:
        """Tokens of `prompt` a stored prefix covers (0 if none)."""
        keys = (*self.entries, *self.shared)
        covering = [len(k) for k in keys if len(k) < len(prompt) and tuple(prompt[: len(k)]) == k]
        return max(covering, default=0)

    def share(self, tokens: list[int], kv: KV) -> None:
        if len(self.shared) >= self.max_shared:
            del self.shared[next(iter(self.shared))]  # the oldest
        self.shared[tuple(tokens)] = kv

    def put(self, tokens: list[int], kv: KV) -> None:
        self.entries[tuple(tokens)] = (self.calls, kv)

    def next_call(self) -> None:
        """A new generate call: forget entries no turn took in time (finished episodes)."""
        self.calls += 1
        old = [k for k, (call, _) in self.entries.items() if call < self.calls - self.max_age]
        for key in old:
            del self.entries[key]


def common_start(prompts: list[list[int]]) -> int:
    """Length of the token prefix all `prompts` share, leaving each a token to feed."""
    first, n = prompts[0], min(len(p) for p in prompts) - 1
    for p in prompts[1:]:
        n = next((i for i in range(n) if p[i] != first[i]), n)
    return max(n, 0)


def row_kv(cache: Any, index: int, start: int) -> KV:
    """Row `index`'s states from column `start` on (a copy: the batch's cache goes away)."""
    return [(layer.keys[index, :, start:].clone(), layer.values[index, :, start:].clone()) for layer in cache.layers]  # fmt: skip


def reuse_supported(cache: Any) -> bool:
    return bool(getattr(cache, "layers", None)) and all(
        isinstance(layer, GrowingLayer) for layer in cache.layers
    )


def cached_prefill(
    store: PrefixCache,
    prompts: list[list[int]],
    mask: torch.Tensor,
    new_cache: Callable[[int], Any],
    reserve: int,
) -> tuple[Any, int] | None:
    """A cache pre-filled with the stored states of the prompts' prefixes, and the
    first column the model still has to run; None when no prompt has a stored prefix.

    Prompts are left-padded to width W; with S the longest part not stored, the columns
    before W - S come from the store (padding and unstored tokens before it: zeros,
    masked) and the last S columns are fed to the model, every row's own rest included.
    """
    found = [store.take(p) for p in prompts]
    if all(f is None for f in found):
        return None
    width = mask.shape[1]
    fed = max(len(p) - (f[0] if f else 0) for p, f in zip(prompts, found, strict=True))
    kept = width - fed
    if kept <= 0:
        return None
    cache = new_cache(fed + reserve)  # an empty cache with room for `fed + reserve` more
    if not reuse_supported(cache):
        return None
    sample = next(f[1] for f in found if f)
    layers: list[Any] = list(cache.layers)
    for i, (layer, (k, v)) in enumerate(zip(layers, sample, strict=True)):
        keys = k.new_zeros(len(prompts), k.shape[0], kept, k.shape[-1])
        values = v.new_zeros(len(prompts), v.shape[0], kept, v.shape[-1])
        for row, (prompt, f) in enumerate(zip(prompts, found, strict=True)):
            n = len(prompt) - fed  # the row's tokens before column `kept`
            if f is not None and n > 0:
                keys[row, :, kept - n :] = f[1][i][0][:, :n]
                values[row, :, kept - n :] = f[1][i][1][:, :n]
        layer.update(keys, values)
    return cache, kept
