"""A KV cache for the HF engine's decoding loop that does not copy itself every step.

transformers' `DynamicCache` appends each decoded token with `torch.cat`, which copies
the whole cache of every layer once per step: with long multi-turn contexts that copy
costs more than the model's own work (a 6M model, 20 rows of ~900 tokens on one CPU
thread: 78 ms per step with it, 29 ms without). `GrowingLayer` keeps the keys and
values in a buffer with room for the reply and writes each step's column in place;
attention sees views of exactly the same values, so the logits are bit-identical.
With `transposed_values` the values are kept as [head_dim, positions] for
decode_attention.py (same values; its products sum in another order).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache

try:  # the per-layer cache API (transformers >= 4.54); older versions keep DynamicCache
    from transformers.cache_utils import DynamicLayer
except ImportError:  # pragma: no cover - depends on the installed transformers
    DynamicLayer = None  # type: ignore[misc,assignment]


def compact_order(alive: torch.Tensor) -> torch.Tensor:
    """The rows to keep when the finished ones leave the batch: live rows stay in their
    slots, and those past the new batch size fill the freed slots (so a cache moves one
    row per finished row instead of copying every live one)."""
    n = int(alive.sum())
    order = torch.arange(n, device=alive.device)
    order[(~alive[:n]).nonzero().squeeze(-1)] = alive[n:].nonzero().squeeze(-1) + n
    return order


def growing_cache(config: Any, reserve: int, transposed_values: bool = False) -> DynamicCache:
    """A `DynamicCache` whose full-attention layers reserve `reserve` extra positions
    (the reply's tokens) at the first write; sliding-window and other layers are kept."""
    cache = DynamicCache(config=config)
    if DynamicLayer is None or not hasattr(cache, "layers"):
        return cache
    cache.layers = [
        GrowingLayer(reserve, transposed_values) if type(layer) is DynamicLayer else layer
        for layer in cache.layers
    ]
    return cache


if DynamicLayer is not None:

    class GrowingLayer(DynamicLayer):  # type: ignore[valid-type,misc]
        """Keys/values in a buffer with spare columns; `keys`/`values` are views of it."""

        _layer_type = None  # never registered as transformers' default layer

        def __init__(self, reserve: int = 0, transposed_values: bool = False):
            super().__init__()
            self.reserve = reserve
            self.transposed_values = transposed_values
            self.length = 0

        def update(
            self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
        ) -> tuple[torch.Tensor, torch.Tensor]:
            if not self.is_initialized:
                self.device = key_states.device
                self.is_initialized = True
                self._k = self._alloc(key_states, key_states.shape[-2] + self.reserve)
                size = value_states.shape[-2] + self.reserve
                self._v = self._alloc(value_states, size, self.transposed_values)
            end = self.length + key_states.shape[-2]
            if end > self._k.shape[-2]:  # past the reserve: grow geometrically
                size = max(end, 2 * self._k.shape[-2])
                self._k = self._grown(self._k, size)
                self._v = self._grown(self._v, size, self.transposed_values)
            self._k[:, :, self.length : end] = key_states
            self._v[:, :, self.length : end] = value_states
            self.length = end
            return self._views()

        def get_seq_length(self) -> int:
            return self.length

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            """Keep rows `indices`. An order from `compact_order` (rows past the new
            size move into freed slots) is done in place: only the moved rows are
            copied, not the whole cache."""
            if not self.length:
                return
            n = len(indices)
            moved = (indices != torch.arange(n, device=indices.device)).nonzero().squeeze(-1)
            src = indices[moved]
            if bool((src >= n).all()):
                self._k[moved], self._v[moved] = self._k[src], self._v[src]
                self._k, self._v = self._k[:n], self._v[:n]
            else:
                self._k, self._v = self._k[indices], self._v[indices]
            self._views()

        def reset(self) -> None:
            self.length = 0
            super().reset()

        def _views(self) -> tuple[torch.Tensor, torch.Tensor]:
            keys, values = self._k[:, :, : self.length], self._v[:, :, : self.length]
            self.keys, self.values = keys, values
            return keys, values

        @staticmethod
        def _alloc(like: torch.Tensor, size: int, transposed: bool = False) -> torch.Tensor:
            """[..., size, dim], laid out as [..., dim, size] when `transposed`."""
            if transposed:
                return like.new_empty((*like.shape[:-2], like.shape[-1], size)).transpose(-1, -2)
            return like.new_empty((*like.shape[:-2], size, like.shape[-1]))

        def _grown(self, buf: torch.Tensor, size: int, transposed: bool = False) -> torch.Tensor:
            out = self._alloc(buf, size, transposed)
            out[:, :, : self.length] = buf[:, :, : self.length]
            return out
