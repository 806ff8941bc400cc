"""The learner the driver talks to: SFT steps, PPO updates, checkpoints, weights out.

It holds the algorithms' state (policy version, KL controller, shuffling RNG) and runs
them over a `Backend`; nothing here knows which engine trains the model.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from actorlearner.learner import ppo
from actorlearner.learner.backend import Backend
from actorlearner.learner.checkpoint import latest_tag, load_rng, prune, save_rng, write_json
from actorlearner.learner.config import LearnerConfig
from actorlearner.learner.distributed import all_reduce_sum, barrier
from actorlearner.learner.policy import target_logprobs
from actorlearner.learner.ppo_update import PPOState, ppo_update
from actorlearner.learner.sft import SFTBatch
from actorlearner.trajectory import Trajectory


class Learner:
    """A `LearnerBackend` for one rank, over any `Backend`."""

    def __init__(self, backend: Backend, cfg: LearnerConfig):
        self.backend = backend
        self.cfg = cfg
        self.pad_id = backend.pad_id
        p = cfg.ppo
        self.state = PPOState(
            kl_ctl=ppo.make_kl_controller(p.kl_coef, p.kl_target, p.kl_horizon),
            generator=torch.Generator().manual_seed(cfg.seed),
        )
        self.step = 0  # learner steps (SFT or PPO), drives checkpoint cadence

    @property
    def version(self) -> int:
        return self.state.version

    # -------------------------------------------------------------------- SFT
    def sft_step(self, batch: SFTBatch) -> dict[str, float]:
        """One optimizer step on a global SFT batch: mean NLL over its trained tokens."""
        start = time.perf_counter()
        b = self.backend
        normalizer = batch.loss_mask.sum().clamp(min=1) / b.world_size
        nll_sum = torch.zeros((), device=b.device)
        for m in b.forward(batch.input_ids, batch.attention_mask, range(len(batch))):
            nll = -(target_logprobs(m.logits, m.ids, 1.0) * m.take(batch.loss_mask)).sum()
            # the value head joins the graph with weight 0 so every rank reduces the same params
            assert m.values is not None
            b.backward(m.weight * nll / normalizer + 0.0 * m.values.sum())
            nll_sum += m.weight * nll.detach()
        grad_norm, lr = b.step()
        self.step += 1
        all_reduce_sum(nll_sum)
        return {
            "loss/sft": float(nll_sum) / float(batch.loss_mask.sum().clamp(min=1)),
            "grad_norm": grad_norm,
            "lr": lr,
            "tokens_per_s": float(batch.attention_mask.sum()) / (time.perf_counter() - start),
        }

    @torch.no_grad()
    def sft_eval(self, batches: Sequence[SFTBatch]) -> dict[str, float]:
        """Mean NLL per trained token over held-out batches (each rank scores its share)."""
        b = self.backend
        totals = torch.zeros(2, device=b.device)
        for batch in batches:
            rows = range(len(batch))
            ids, attn = batch.input_ids, batch.attention_mask
            for m in b.forward(ids, attn, rows, train=False, values=False, micro_size=16):
                mask = m.weight * m.take(batch.loss_mask)
                totals[0] -= (target_logprobs(m.logits, m.ids, 1.0) * mask).sum()
                totals[1] += mask.sum()
        all_reduce_sum(totals)
        return {
            "eval/loss": float(totals[0] / totals[1].clamp(min=1)),
            "eval/tokens": float(totals[1]),
        }

    # -------------------------------------------------------------------- PPO
    def ppo_step(self, trajectories: Sequence[Trajectory]) -> dict[str, float]:
        """One PPO update on a rollout batch (see `ppo_update`)."""
        metrics = ppo_update(self.backend, trajectories, self.cfg.ppo, self.state)
        if "policy_version" in metrics:
            self.step += 1
        return metrics

    # ------------------------------------------------------- weights & export
    def state_dict_for_actors(self) -> dict[str, torch.Tensor] | None:
        """Full HF-layout weights (LoRA merged) on rank 0, None elsewhere. Collective."""
        return self.backend.export()  # type: ignore[return-value]

    def export_hf(self, directory: str | Path, merge_lora: bool = True) -> Path | None:
        """A `from_pretrained` directory (+ tokenizer, value head) on rank 0. Collective."""
        return self.backend.export(Path(directory), merge_lora)  # type: ignore[return-value]

    # ------------------------------------------------------------ checkpoints
    def should_checkpoint(self) -> bool:
        interval = self.cfg.checkpoint_interval
        return interval > 0 and self.step > 0 and self.step % interval == 0

    def save_checkpoint(self, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Backend state + RNG + trainer state under directory/step_N; `latest` moves last."""
        root = Path(directory)
        tag = f"step_{self.step:08d}"
        state = {
            "step": self.step,
            "version": self.version,
            "kl_ctl": self.state.kl_ctl.state_dict(),
            "extra": extra or {},
        }
        self.backend.save(root, tag, state)
        save_rng(root / tag, self.backend.rank, self.state.generator)
        barrier()
        if self.backend.rank == 0:
            world = self.backend.world_size
            write_json(root / tag / "trainer_state.json", {**state, "world_size": world})
            tmp = root / "latest.tmp"
            tmp.write_text(tag)
            tmp.replace(root / "latest")
            prune(root, self.cfg.keep_checkpoints)
        barrier()
        return root / tag

    def load_checkpoint(self, directory: str | Path, tag: str | None = None) -> dict[str, Any]:
        """Restore everything `save_checkpoint` wrote; returns the `extra` dict (data position)."""
        root = Path(directory)
        tag = tag or latest_tag(root)
        if tag is None:
            raise FileNotFoundError(f"no checkpoint under {root} (no 'latest' marker)")
        client = self.backend.load(root, tag)
        self.step = int(client["step"])
        self.state.version = int(client["version"])
        self.state.kl_ctl.load_state_dict(client["kl_ctl"])
        load_rng(root / tag, self.backend.rank, self.state.generator)
        return dict(client.get("extra", {}))
