"""The policy-engine interface: token ids in, token ids + logprobs out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    stop_token_ids: tuple[int, ...] = ()  # generation ends after emitting one of these
    seed: int | None = None


@dataclass
class Generation:
    token_ids: list[int]  # sampled ids, including the stop token if one was emitted
    # log p(token) under log_softmax(logits / temperature) (temperature 1 for greedy),
    # before top-p/top-k truncation, so the learner can recompute the same quantity.
    logprobs: list[float]
    finish_reason: str  # "stop" | "length"
    extra: dict[str, Any] = field(default_factory=dict)


class Engine(Protocol):
    """A policy that generates from token ids. Implementations: HF (CPU/CUDA), vLLM (GPU)."""

    version: int  # policy version of the weights currently loaded

    def generate(self, prompts: list[list[int]], sampling: SamplingParams) -> list[Generation]: ...

    def load_weights(self, state_dict: dict[str, Any], version: int) -> None: ...
