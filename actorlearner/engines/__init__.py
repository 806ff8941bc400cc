"""Policy engines: `make_engine("hf" | "vllm", model_path, **kw)`.

The vLLM backend is imported only when asked for, so CPU installs never need it.
"""

from __future__ import annotations

from typing import Any

from actorlearner.engines.base import Engine, Generation, SamplingParams

ENGINE_KINDS = ("hf", "vllm")


def make_engine(kind: str, model_path: str, **kwargs: Any) -> Engine:
    """Build an engine. `hf` kwargs: dtype, device, lora, prune_finished; `vllm`: see VLLMEngine."""
    if kind == "hf":
        from actorlearner.engines.hf import HFEngine

        return HFEngine(model_path, **kwargs)
    if kind == "vllm":
        from actorlearner.engines.vllm import VLLMEngine

        return VLLMEngine(model_path, **kwargs)
    raise ValueError(f"unknown engine kind {kind!r}; choose one of {', '.join(ENGINE_KINDS)}")


__all__ = ["ENGINE_KINDS", "Engine", "Generation", "SamplingParams", "make_engine"]
