"""The learner interface the driver talks to; DeepSpeed implements it, others could."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from actorlearner.learner.sft import SFTBatch
from actorlearner.trajectory import Trajectory


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
