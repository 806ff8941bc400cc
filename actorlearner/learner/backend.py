"""The two interfaces of the learner.

`Backend` is what the algorithms (PPO, SFT) run on: forward, backward, step, save
(with its load) and export. Data parallelism, ZeRO partitioning and device placement
stay behind it, so `ppo_update` reads the same for one CPU rank or many GPUs.
`LearnerBackend` is what the driver talks to (a `Learner`, or a `LearnerGroup` of ranks).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from actorlearner.learner.sft import SFTBatch
from actorlearner.trajectory import Trajectory


@dataclass
class Micro:
    """One forward pass over some rows of a global batch, on this rank.

    `weight` is 0 for a padding pass (every rank runs the same number of passes, see the
    DeepSpeed backend): multiply its loss by the weight and skip its outputs.
    """

    rows: list[int]  # indices into the global batch
    weight: float
    ids: torch.Tensor  # [b, L] on the backend's device, right-padded columns trimmed
    logits: torch.Tensor  # [b, L, V]
    values: torch.Tensor | None  # [b, L], when asked for

    def take(self, t: torch.Tensor) -> torch.Tensor:
        """This micro-batch's rows of a global target-aligned [B, T-1] tensor, on device."""
        idx = torch.as_tensor(self.rows)
        return t[idx, : self.ids.shape[1] - 1].to(self.logits.device)


class Backend(Protocol):
    rank: int
    world_size: int
    pad_id: int
    device: torch.device

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        rows: Sequence[int],
        *,
        train: bool = True,
        values: bool = True,
        reference: bool = False,
        micro_size: int | None = None,
    ) -> Iterator[Micro]:
        """This rank's share of `rows`, in micro-batches; `reference` runs the frozen policy."""
        ...

    def backward(self, loss: torch.Tensor) -> None: ...

    def step(self) -> tuple[float, float]:
        """Apply the accumulated gradients; returns (grad norm, the lr this step used)."""
        ...

    def save(self, directory: Path, tag: str, state: dict[str, Any]) -> None: ...

    def load(self, directory: Path, tag: str) -> dict[str, Any]: ...

    def export(
        self, directory: Path | None = None, merge_lora: bool = True
    ) -> dict[str, torch.Tensor] | Path | None:
        """Full HF-layout weights for the actors (no directory), or a `from_pretrained`
        directory; on rank 0 (None elsewhere). Collective."""
        ...


class LearnerBackend(Protocol):
    version: int  # policy version: number of PPO updates applied
    step: int  # learner steps (SFT or PPO calls): logging and checkpoint cadence
    pad_id: int  # the tokenizer's pad id, for collating batches

    def should_checkpoint(self) -> bool: ...

    def sft_step(self, batch: SFTBatch) -> dict[str, float]: ...

    def sft_eval(self, batches: Sequence[SFTBatch]) -> dict[str, float]: ...

    def ppo_step(self, trajectories: Sequence[Trajectory]) -> dict[str, float]: ...

    def state_dict_for_actors(self) -> dict[str, torch.Tensor] | None: ...

    def save_checkpoint(
        self, directory: str | Path, extra: dict[str, Any] | None = None
    ) -> Path: ...

    def load_checkpoint(self, directory: str | Path, tag: str | None = None) -> dict[str, Any]: ...

    def export_hf(self, directory: str | Path, merge_lora: bool = True) -> Path | None: ...
