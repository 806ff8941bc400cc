"""The learner's `Backend` on DeepSpeed: forward, backward, step, save and export.

One instance per rank. Every rank receives the whole global batch (trajectories are
small next to the model) and `forward` runs this rank's strided share of the rows it is
given, in micro-batches; the algorithms divide losses by the global token count over the
world size, so DeepSpeed's gradient averaging yields the global per-token mean.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from actorlearner.learner.backend import Micro
from actorlearner.learner.batch import chunks, rank_share
from actorlearner.learner.config import LearnerConfig, resolve_deepspeed_config
from actorlearner.learner.distributed import barrier, init_distributed
from actorlearner.learner.export import gather_state
from actorlearner.learner.learner import Learner
from actorlearner.learner.policy import (
    PolicyWithValue,
    base_lm,
    build_policy,
)


def _trim(ids: torch.Tensor, attn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Drop columns that are padding in every row (right padding), return the new length."""
    length = int(attn.sum(1).max())
    return ids[:, :length], attn[:, :length], length


def _my_micro_batches(
    rows: Sequence[int], rank: int, world_size: int, size: int
) -> list[tuple[list[int], float]]:
    """This rank's micro-batches of a global batch, each with a loss weight.

    Every rank gets the same number of micro-batches, since ZeRO-3 gathers parameters
    collectively in each forward: a rank with a smaller share pads with a weight-0
    micro-batch (one real row whose loss and outputs are discarded).
    """
    mine = [(micro, 1.0) for micro in chunks(rank_share(rows, rank, world_size), size)]
    count = math.ceil(math.ceil(len(rows) / world_size) / size)  # rank 0's, the largest
    return mine + [([rows[0]], 0.0)] * (count - len(mine))


class DeepSpeedBackend:
    """`Backend` on a DeepSpeed engine (ZeRO 0/2/3; gloo on CPU, NCCL on GPU)."""

    def __init__(
        self,
        cfg: LearnerConfig,
        rank: int = 0,
        world_size: int = 1,
        master_addr: str = "127.0.0.1",
        master_port: int | None = None,
    ):
        import deepspeed
        from transformers import AutoTokenizer

        init_distributed(rank, world_size, master_addr, master_port)
        self.cfg = cfg
        self.rank, self.world_size = rank, world_size
        policy, self.reference = build_policy(cfg)
        params = [p for p in policy.parameters() if p.requires_grad]
        self.engine, _, _, self.scheduler = deepspeed.initialize(
            model=policy,
            model_parameters=params,
            config=self._ds_config(),
            lr_scheduler=self._warmup if cfg.warmup_steps > 0 else None,
        )
        self.device = self.engine.device
        self._record_fp32_grad_norm()
        if self.reference is not None:
            self.reference.to(self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.model)
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id

    # ----------------------------------------------------------------- set-up
    def _ds_config(self) -> dict[str, Any]:
        cfg = self.cfg
        ds = json.loads(resolve_deepspeed_config(cfg.deepspeed_config).read_text())
        if cfg.zero_stage is not None:
            ds.setdefault("zero_optimization", {})["stage"] = cfg.zero_stage
        ds["train_micro_batch_size_per_gpu"] = cfg.micro_batch_size
        ds["gradient_accumulation_steps"] = 1
        ds["train_batch_size"] = cfg.micro_batch_size * self.world_size
        ds["gradient_clipping"] = cfg.max_grad_norm
        ds["managed_gradient_accumulation"] = False  # step() is the boundary; any micro count
        opt = ds.setdefault("optimizer", {"type": "AdamW", "params": {}})
        opt.setdefault("params", {}).update(lr=cfg.lr, weight_decay=cfg.weight_decay)
        if cfg.dtype == "bfloat16":
            ds["bf16"] = {"enabled": True}
        elif cfg.dtype == "float16":
            ds["fp16"] = {"enabled": True}
        return ds

    def _warmup(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        """Linear warm-up: optimizer step k (from 1) uses lr * min(1, k / warmup_steps)."""
        warmup = self.cfg.warmup_steps
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))

    def _record_fp32_grad_norm(self) -> None:
        """ZeRO-0 fp32 clips without keeping the norm; keep it so `grad_norm` is always logged."""
        engine = self.engine
        if engine.zero_optimization() or engine.fp16_enabled() or engine.bfloat16_enabled():
            return
        from deepspeed.runtime.utils import clip_grad_norm_

        def clip_and_record() -> None:
            engine._global_grad_norm = clip_grad_norm_(
                engine.module.parameters(), max_norm=engine.gradient_clipping(), mpu=engine.mpu
            )

        engine.clip_fp32_gradients = clip_and_record

    @property
    def policy(self) -> PolicyWithValue:
        return self.engine.module

    @property
    def zero3(self) -> bool:
        return self.engine.zero_optimization_partition_weights()

    def lr(self) -> float:
        return float(self.engine.get_lr()[0])

    # ------------------------------------------------------------- interface
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
        """This rank's share of `rows` in micro-batches, padded so every rank runs as many."""
        self.engine.train(train)
        size = micro_size or self.cfg.micro_batch_size
        for micro, weight in _my_micro_batches(list(rows), self.rank, self.world_size, size):
            idx = torch.as_tensor(micro)
            ids, attn, _ = _trim(input_ids[idx], attention_mask[idx])
            ids, attn = ids.to(self.device), attn.to(self.device)
            if reference:
                logits, vals = self._reference_logits(ids, attn), None
            else:
                logits, vals = self.engine(ids, attn, values)
            yield Micro(micro, weight, ids, logits, vals)

    def _reference_logits(self, ids: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        if self.reference is None:
            with self.policy.adapters_disabled():
                return self.engine(ids, attn, False)[0]
        return self.reference(input_ids=ids, attention_mask=attn, use_cache=False).logits

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss, scale_wrt_gas=False)

    def step(self) -> tuple[float, float]:
        lr = self.lr()  # the lr this step uses (the scheduler moves on inside engine.step)
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        return (float(norm) if norm is not None else float("nan")), lr

    def save(self, directory: Path, tag: str, state: dict[str, Any]) -> None:
        self.engine.save_checkpoint(str(directory), tag=tag, client_state=state, save_latest=False)

    def load(self, directory: Path, tag: str) -> dict[str, Any]:
        path, client = self.engine.load_checkpoint(str(directory), tag=tag)
        if path is None:
            raise FileNotFoundError(f"DeepSpeed could not load checkpoint {directory / tag}")
        return dict(client)

    def export(
        self, directory: Path | None = None, merge_lora: bool = True
    ) -> dict[str, torch.Tensor] | Path | None:
        if directory is None:
            return self.state_dict_for_actors()
        return self.export_hf(directory, merge_lora)

    # ------------------------------------------------------- weights & export
    def _on_rank0_gathered(self, fn, params: list | None = None):
        """fn(policy) on rank 0 with `params` (default: all trainable ones and the value
        head) ZeRO-3 gathered; None elsewhere. Collective."""
        if not self.zero3:
            return fn(self.policy) if self.rank == 0 else None
        import deepspeed

        if params is None:
            params = [p for p in self.policy.parameters() if p.requires_grad]
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            return fn(self.policy) if self.rank == 0 else None

    def state_dict_for_actors(self) -> dict[str, torch.Tensor] | None:
        """Full HF-layout weights (LoRA merged) on rank 0, None elsewhere. Collective; under
        ZeRO-3 gathered one module at a time, never the whole model (learner/export.py)."""
        state = gather_state(self.policy, self.zero3, keep=self.rank == 0)
        return state if self.rank == 0 else None

    def export_hf(self, directory: str | Path, merge_lora: bool = True) -> Path | None:
        """Write a `from_pretrained`-loadable model dir (+ tokenizer, value head) on rank 0.

        merge_lora=False (LoRA only) writes the PEFT adapter instead of merged weights.
        """
        from safetensors.torch import save_file
        from transformers import AutoModelForCausalLM

        out = Path(directory)
        adapter_only = self.policy.use_lora and not merge_lora

        def collect(policy: PolicyWithValue):
            head = {k: v.detach().clone().cpu() for k, v in policy.value_head.state_dict().items()}
            if adapter_only:
                out.mkdir(parents=True, exist_ok=True)
                policy.lm.save_pretrained(out)  # PEFT adapter, names the base model
            return head

        state = None if adapter_only else self.state_dict_for_actors()
        head = list(self.policy.value_head.parameters())
        adapters = [p for p in self.policy.parameters() if p.requires_grad] if adapter_only else []
        value_head = self._on_rank0_gathered(collect, list(dict.fromkeys(head + adapters)))
        if self.rank != 0:
            barrier()
            return None
        out.mkdir(parents=True, exist_ok=True)
        if state is not None:
            config = base_lm(self.policy).config
            model = AutoModelForCausalLM.from_config(config, dtype=next(iter(state.values())).dtype)
            model.load_state_dict(state)
            model.save_pretrained(out)
        self.tokenizer.save_pretrained(out)
        save_file(value_head, str(out / "value_head.safetensors"))
        barrier()
        return out


class DeepSpeedLearner(Learner):
    """The driver-facing learner on a DeepSpeed backend (one per rank)."""

    def __init__(
        self,
        cfg: LearnerConfig,
        rank: int = 0,
        world_size: int = 1,
        master_addr: str = "127.0.0.1",
        master_port: int | None = None,
    ):
        backend = DeepSpeedBackend(cfg, rank, world_size, master_addr, master_port)
        super().__init__(backend, cfg)
        self.tokenizer = backend.tokenizer
