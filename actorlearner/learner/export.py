"""Policy weights for inference engines, streamed one module at a time.

Engines load the plain transformers model: names without the policy's wrappers
(`lm.`, PEFT's `base_model.model.`, `.base_layer`), LoRA deltas folded into the
weights they adapt, no value head. Under ZeRO-3 each rank holds a slice of every
parameter; gathering the whole model at once would put a full copy on every rank
(about 30 GB for a 15B model in bf16), so each module's parameters are gathered
together, yielded, and released before the next module's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

Named = tuple[str, torch.Tensor]


def hf_model(policy: Any) -> nn.Module:
    """The transformers model inside the policy (unwrapped from PEFT when LoRA is on)."""
    lm = policy.lm
    return lm.get_base_model() if getattr(policy, "use_lora", False) else lm


def _gathered(params: list[nn.Parameter], zero3: bool) -> Any:
    """Full values of `params` inside the block (a collective under ZeRO-3)."""
    if not zero3 or not params:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=None)


def _units(model: nn.Module) -> Iterator[tuple[str, nn.Module, bool]]:
    """(name, module, recurse) for every module that owns parameters directly; a LoRA layer
    is one unit with its base layer and adapters, so its merged weight can be computed."""
    from peft.tuners.lora import LoraLayer

    lora_prefixes: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(p) for p in lora_prefixes):
            continue
        if isinstance(module, LoraLayer):
            lora_prefixes.append(name + ".")
            yield name, module, True  # type: ignore[misc]  # a LoraLayer is an nn.Module
        elif any(True for _ in module.parameters(recurse=False)):
            yield name, module, False


def _lora_weights(name: str, layer: Any) -> Iterator[Named]:
    """The base layer's parameters with every active adapter's delta added to the weight."""
    base = layer.get_base_layer()
    for leaf, param in base.named_parameters(recurse=False):
        value = param.detach()
        if leaf == "weight":
            for adapter in layer.active_adapters:
                if adapter in layer.lora_A:
                    value = value + layer.get_delta_weight(adapter).to(value.dtype)
        yield f"{name}.{leaf}", value


def iter_weights(policy: Any, zero3: bool = False) -> Iterator[Named]:
    """(name, tensor) of the engine-facing model, one module at a time; a collective under
    ZeRO-3 (every rank must drain the iterator). Tensors are valid until the next item:
    copy what you keep."""
    model = hf_model(policy)
    for name, module, is_lora in _units(model):
        prefix = f"{name}." if name else ""
        with _gathered(list(module.parameters(recurse=is_lora)), zero3):
            if is_lora:
                yield from _lora_weights(name, module)
            else:
                for leaf, param in module.named_parameters(recurse=False):
                    yield prefix + leaf, param.detach()
    yield from _persistent_buffers(model)


def _persistent_buffers(model: nn.Module) -> Iterator[Named]:
    """Buffers the model's state dict carries (never partitioned by ZeRO)."""
    params = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    for key, value in model.state_dict(keep_vars=True).items():
        if key in params or "lora_" in key:
            continue
        if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter):
            yield key.replace(".base_layer", ""), value.detach()


def gather_state(policy: Any, zero3: bool, keep: bool, device: str = "cpu") -> dict:
    """All weights on this rank when `keep` (rank 0), nothing elsewhere; one module's worth
    of gathered memory at a time. Collective under ZeRO-3."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in iter_weights(policy, zero3):
        if keep:
            out[name] = tensor.to(device, copy=True)
    return out
