"""A single-process `Backend` on plain torch: AdamW, grad-norm clipping, linear warm-up.

The reference the DeepSpeed backend is checked and timed against (same `ppo_update`,
same results), and the smallest template for another backend.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from actorlearner.learner.backend import Micro
from actorlearner.learner.batch import chunks
from actorlearner.learner.config import LearnerConfig
from actorlearner.learner.export import gather_state
from actorlearner.learner.learner import Learner
from actorlearner.learner.policy import build_policy


class TorchBackend:
    def __init__(self, cfg: LearnerConfig, betas: tuple[float, float] = (0.9, 0.95)):
        from transformers import AutoTokenizer

        self.cfg = cfg
        self.rank, self.world_size = 0, 1
        self.device = torch.device("cpu")
        self.policy, self.reference = build_policy(cfg)
        params = [p for p in self.policy.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            params, lr=cfg.lr, betas=betas, eps=1e-8, weight_decay=cfg.weight_decay
        )
        warmup = max(1, cfg.warmup_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / warmup)
        )
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.model)
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else self.tokenizer.eos_token_id)

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
        self.policy.train(train)
        for micro in chunks(list(rows), micro_size or self.cfg.micro_batch_size):
            idx = torch.as_tensor(micro)
            length = int(attention_mask[idx].sum(1).max())
            ids, attn = input_ids[idx, :length], attention_mask[idx, :length]
            if reference and self.reference is not None:
                out = self.reference(input_ids=ids, attention_mask=attn, use_cache=False)
                yield Micro(micro, 1.0, ids, out.logits, None)
            elif reference:
                with self.policy.adapters_disabled():
                    logits, _ = self.policy(ids, attn, False)
                yield Micro(micro, 1.0, ids, logits, None)
            else:
                yield Micro(micro, 1.0, ids, *self.policy(ids, attn, values))

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self) -> tuple[float, float]:
        lr = float(self.scheduler.get_last_lr()[0])
        norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return float(norm), lr

    def save(self, directory: Path, tag: str, state: dict[str, Any]) -> None:
        (directory / tag).mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "policy": self.policy.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "client": state,
            },
            directory / tag / "torch_state.pt",
        )

    def load(self, directory: Path, tag: str) -> dict[str, Any]:
        saved = torch.load(directory / tag / "torch_state.pt", weights_only=False)
        self.policy.load_state_dict(saved["policy"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        return dict(saved["client"])

    def export(
        self, directory: Path | None = None, merge_lora: bool = True
    ) -> dict[str, torch.Tensor] | Path | None:
        """Weights for the actors; writing a model directory is left to the DeepSpeed backend."""
        if directory is not None:
            raise NotImplementedError("TorchBackend exports weights only (directory=None)")
        return gather_state(self.policy, zero3=False, keep=True)


class TorchLearner(Learner):
    def __init__(self, cfg: LearnerConfig):
        self.torch_backend = TorchBackend(cfg)
        super().__init__(self.torch_backend, cfg)
