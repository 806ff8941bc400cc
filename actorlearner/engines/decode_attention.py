"""Attention of a single decoded token over a long KV cache, for the HF engine on CPU.

A decoding step reads every row's whole cache, and on CPU that read is most of the step
(64% of a 24-row step at ~700 positions with torch's SDPA). With the values stored
transposed, [head_dim, positions] (kv_cache.py), both products of the attention are
matrix-vector products over contiguous memory: a whole step of the shipped model went
from 26.6 to 25.5 ms (24 rows, ~700 positions, one thread), logits equal to ~1e-5.
Prefill calls and anything this function does not model (softcap, attention sinks, a
position bias) go to transformers' SDPA function as before.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "actorlearner_decode"
_UNMODELLED = ("softcap", "s_aux", "sinks", "position_bias")


def decode_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention signature: query [B, H, Q, D], key/value [B, Hkv, T, D],
    a boolean mask (True: attend) or None; returns [B, Q, H, D]."""
    if query.shape[2] != 1 or dropout or any(kwargs.get(k) is not None for k in _UNMODELLED):
        if value.stride(-1) != 1:  # SDPA's CPU kernels want the usual layout
            value = value.contiguous()
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    batch, heads, _, dim = query.shape
    groups = heads // key.shape[1]  # query heads per KV head (grouped-query attention)
    scale = dim**-0.5 if scaling is None else scaling
    q = query.reshape(batch, key.shape[1], groups, dim) * scale
    scores = torch.matmul(key, q.transpose(-1, -2)).transpose(-1, -2)  # [B, Hkv, G, T]
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, float("-inf"))
        else:
            scores = scores + attention_mask
    out = torch.matmul(torch.softmax(scores, dim=-1), value)  # [B, Hkv, G, D]
    return out.reshape(batch, heads, 1, dim).transpose(1, 2), None


AttentionInterface.register(NAME, decode_attention)
AttentionMaskInterface.register(NAME, sdpa_mask)


def use_decode_attention(model: torch.nn.Module) -> bool:
    """Switch a CPU model that attends with SDPA to `decode_attention`; False (model
    unchanged) on other devices, other attention kinds, or models that do not dispatch
    attention through transformers' interface."""
    config = getattr(model, "config", None)
    device = next(model.parameters()).device
    current = getattr(config, "_attn_implementation", None)
    if device.type != "cpu" or current not in ("sdpa", NAME):
        return False
    if current == NAME:  # another engine on this model switched it
        return True
    setter = getattr(model, "set_attn_implementation", None)
    if setter is None or not getattr(model, "_can_set_attn_implementation", lambda: False)():
        return False
    setter(NAME)
    return getattr(config, "_attn_implementation", None) == NAME
