"""DeepSpeed implementation of the learner: SFT and PPO steps, checkpoints, weight export.

One instance per rank. Every rank receives the whole global batch (trajectories are
small next to the model) and works on a strided share of each mini-batch; losses are
divided by the mini-batch's global token count over the world size, so DeepSpeed's
gradient averaging yields exactly the global per-token mean, whatever the split.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from actorlearner.learner import ppo
from actorlearner.learner.batch import (
    TokenBatch,
    chunks,
    collate,
    group_ids,
    rank_share,
    split_stale,
)
from actorlearner.learner.checkpoint import latest_tag, load_rng, prune, save_rng, write_json
from actorlearner.learner.config import LearnerConfig, resolve_deepspeed_config
from actorlearner.learner.distributed import (
    all_gather_objects,
    all_reduce_sum,
    barrier,
    init_distributed,
)
from actorlearner.learner.policy import (
    PolicyWithValue,
    base_lm,
    build_policy,
    merged_state_dict,
    target_logprobs,
)
from actorlearner.learner.sft import SFTBatch
from actorlearner.trajectory import Trajectory


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


def _minibatches(perm: list[int], n: int) -> list[list[int]]:
    size = -(-len(perm) // n)
    return [perm[i : i + size] for i in range(0, len(perm), size)]


class DeepSpeedLearner:
    """LearnerBackend on a DeepSpeed engine (ZeRO 0/2/3; gloo on CPU, NCCL on GPU)."""

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
        p = cfg.ppo
        self.kl_ctl = ppo.make_kl_controller(p.kl_coef, p.kl_target, p.kl_horizon)
        self.generator = torch.Generator().manual_seed(cfg.seed)  # mini-batch shuffles
        self.version = 0  # PPO updates applied
        self.step = 0  # learner steps (SFT or PPO), drives checkpoint cadence

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

    def _forward(self, ids: torch.Tensor, attn: torch.Tensor, with_values: bool = True):
        return self.engine(ids.to(self.device), attn.to(self.device), with_values)

    def _optimizer_step(self) -> float:
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    # -------------------------------------------------------------------- SFT
    def sft_step(self, batch: SFTBatch) -> dict[str, float]:
        """One optimizer step on a global SFT batch: mean NLL over its trained tokens."""
        start, lr = time.perf_counter(), self.lr()  # lr the coming optimizer step uses
        self.engine.train()
        normalizer = batch.loss_mask.sum().clamp(min=1) / self.world_size
        nll_sum = torch.zeros((), device=self.device)
        rows = list(range(len(batch)))
        size = self.cfg.micro_batch_size
        for micro, weight in _my_micro_batches(rows, self.rank, self.world_size, size):
            sub = batch.select(micro)
            ids, attn, length = _trim(sub.input_ids, sub.attention_mask)
            mask = sub.loss_mask[:, : length - 1].to(self.device)
            logits, values = self._forward(ids, attn)
            nll = -(target_logprobs(logits, ids.to(self.device), 1.0) * mask).sum()
            # the value head joins the graph with weight 0 so every rank reduces the same params
            loss = weight * nll / normalizer + 0.0 * values.sum()
            self.engine.backward(loss, scale_wrt_gas=False)
            nll_sum += weight * nll.detach()
        grad_norm = self._optimizer_step()
        self.step += 1
        all_reduce_sum(nll_sum)
        tokens = float(batch.attention_mask.sum())
        return {
            "loss/sft": float(nll_sum) / float(batch.loss_mask.sum().clamp(min=1)),
            "grad_norm": grad_norm,
            "lr": lr,
            "tokens_per_s": tokens / (time.perf_counter() - start),
        }

    @torch.no_grad()
    def sft_eval(self, batches: Sequence[SFTBatch]) -> dict[str, float]:
        """Mean NLL per trained token over held-out batches (each rank scores its share)."""
        self.engine.eval()
        totals = torch.zeros(2, device=self.device)
        for batch in batches:
            rows = list(range(len(batch)))
            for micro, weight in _my_micro_batches(rows, self.rank, self.world_size, 16):
                sub = batch.select(micro)
                ids, attn, length = _trim(sub.input_ids, sub.attention_mask)
                mask = weight * sub.loss_mask[:, : length - 1].to(self.device)
                logits, _ = self._forward(ids, attn, with_values=False)
                totals[0] -= (target_logprobs(logits, ids.to(self.device), 1.0) * mask).sum()
                totals[1] += mask.sum()
        self.engine.train()
        all_reduce_sum(totals)
        return {
            "eval/loss": float(totals[0] / totals[1].clamp(min=1)),
            "eval/tokens": float(totals[1]),
        }

    # -------------------------------------------------------------------- PPO
    @torch.no_grad()
    def _score(self, trajectories: Sequence[Trajectory]) -> list[tuple]:
        """(index, logprobs, ref logprobs, values) for this rank's trajectories, target-aligned."""
        out = []
        self.engine.eval()
        temperature = self.cfg.ppo.temperature
        rows = list(range(len(trajectories)))
        size = self.cfg.micro_batch_size
        p = self.cfg.ppo
        # the critic-free estimator with stored behaviour logprobs needs only the reference
        policy_pass = p.advantage == "gae" or p.recompute_old_logprobs
        for micro, weight in _my_micro_batches(rows, self.rank, self.world_size, size):
            batch = collate([trajectories[i] for i in micro], self.pad_id)
            ids = batch.input_ids.to(self.device)
            attn = batch.attention_mask.to(self.device)
            ref = target_logprobs(self._reference_logits(ids, attn), ids, temperature)
            if policy_pass:
                logits, values = self.engine(ids, attn, True)
                logp = target_logprobs(logits, ids, temperature)
            else:
                logp, values = torch.zeros_like(ref), torch.zeros_like(ref)
            if weight == 0.0:
                continue  # padding pass: kept the ZeRO-3 collectives in step
            for row, i in enumerate(micro):
                n = len(trajectories[i].token_ids) - 1
                out.append(
                    (i, logp[row, :n].cpu(), ref[row, :n].cpu(), values[row, :n].float().cpu())
                )
        self.engine.train()
        return out

    def _reference_logits(self, ids: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        if self.reference is None:
            with self.policy.adapters_disabled():
                return self.engine(ids, attn, False)[0]
        return self.reference(input_ids=ids, attention_mask=attn, use_cache=False).logits

    def _prepare(
        self, trajectories: Sequence[Trajectory]
    ) -> tuple[TokenBatch, dict[str, torch.Tensor]]:
        """Score the batch (sharded), then compute shaped rewards, GAE and whitening globally."""
        scored = [s for part in all_gather_objects(self._score(trajectories)) for s in part]
        batch = collate(trajectories, self.pad_id)
        logp, ref, values = (torch.zeros_like(batch.rewards) for _ in range(3))
        for i, lp, rf, v in scored:
            logp[i, : len(lp)], ref[i, : len(rf)], values[i, : len(v)] = lp, rf, v
        mask = batch.action_mask
        p = self.cfg.ppo
        old = logp * mask if p.recompute_old_logprobs else batch.old_logprobs
        rewards, kl = ppo.shaped_rewards(batch.rewards, old, ref, mask, self.kl_ctl.value)
        values = values * mask
        if p.advantage == "group":
            groups = group_ids(trajectories)
            advantages, returns = ppo.group_advantages(rewards, mask, groups, p.gamma)
        else:
            advantages, returns = ppo.gae(rewards, values, mask, p.gamma, p.lam)
        if p.whiten_advantages:
            advantages = ppo.masked_whiten(advantages, mask)
        return batch, {
            "old_logprobs": old,
            "values": values,
            "advantages": advantages,
            "returns": returns,
            "kl": kl,
        }

    def _ppo_micro(
        self,
        batch: TokenBatch,
        data: dict[str, torch.Tensor],
        rows: list[int],
        normalizer: torch.Tensor,
        weight: float = 1.0,
    ) -> torch.Tensor:
        """Forward/backward one micro-batch; returns detached sums for the metrics."""
        p = self.cfg.ppo
        idx = torch.as_tensor(rows)
        ids, attn, length = _trim(batch.input_ids[idx], batch.attention_mask[idx])
        ids, attn = ids.to(self.device), attn.to(self.device)

        def take(t: torch.Tensor) -> torch.Tensor:
            return t[idx, : length - 1].to(self.device)

        mask = take(batch.action_mask)
        logits, values = self.engine(ids, attn, True)
        logp = target_logprobs(logits, ids, p.temperature)
        pg, clipped = ppo.policy_loss(
            logp,
            take(data["old_logprobs"]),
            take(data["advantages"]),
            mask,
            p.clip_ratio,
            normalizer,
        )
        vf = ppo.value_loss(
            values[:, :-1].float(),
            take(data["values"]),
            take(data["returns"]),
            mask,
            p.value_clip,
            normalizer,
        )
        with torch.set_grad_enabled(p.entropy_coef > 0):
            entropy = ppo.masked_sum(ppo.entropy_from_logits(logits[:, :-1] / p.temperature), mask)
        vf_coef = 0.0 if p.advantage == "group" else p.vf_coef
        loss = pg.loss + vf_coef * vf.loss - p.entropy_coef * entropy / normalizer
        self.engine.backward(weight * loss, scale_wrt_gas=False)
        approx_kl = ppo.masked_sum(take(data["old_logprobs"]) - logp.detach(), mask)
        sums = [pg.token_sum, vf.token_sum, clipped, entropy.detach(), approx_kl, mask.sum()]
        return weight * torch.stack(sums).float()

    def ppo_step(self, trajectories: Sequence[Trajectory]) -> dict[str, float]:
        """One PPO update on a rollout batch: epochs x mini-batches of optimizer steps."""
        p = self.cfg.ppo
        start, lr = time.perf_counter(), self.lr()  # lr the coming optimizer step uses
        kept, dropped = split_stale(trajectories, self.version, p.max_staleness)
        metrics: dict[str, float] = {"staleness/dropped": float(dropped)}
        if not kept:
            return metrics
        batch, data = self._prepare(kept)
        mask = batch.action_mask
        n = len(kept)
        sums = torch.zeros(6, device=self.device)
        grad_norms = []
        for _ in range(p.epochs):
            perm = torch.randperm(n, generator=self.generator).tolist()
            for mb in _minibatches(perm, p.num_minibatches):
                normalizer = mask[mb].sum().clamp(min=1).to(self.device) / self.world_size
                size = self.cfg.micro_batch_size
                for micro, w in _my_micro_batches(mb, self.rank, self.world_size, size):
                    sums += self._ppo_micro(batch, data, micro, normalizer, w)
                grad_norms.append(self._optimizer_step())
        all_reduce_sum(sums)
        tokens = sums[5].clamp(min=1)
        mean_kl = float(ppo.masked_mean(data["kl"], mask))
        self.kl_ctl.update(mean_kl, n)
        self.version += 1
        self.step += 1
        metrics.update(
            {
                "loss/policy": float(sums[0] / tokens),
                "loss/value": float(sums[1] / tokens),
                "clipfrac": float(sums[2] / tokens),
                "entropy": float(sums[3] / tokens),
                "approx_kl": float(sums[4] / tokens),
                "kl": mean_kl,
                "kl_coef": self.kl_ctl.value,
                "value_error": float(
                    ppo.masked_mean((data["values"] - data["returns"]) ** 2, mask)
                ),
                "grad_norm": sum(grad_norms) / len(grad_norms),
                "lr": lr,
                "tokens_per_s": float(batch.attention_mask.sum()) / (time.perf_counter() - start),
                "reward/total": sum(t.total_reward for t in kept) / n,
                "staleness/mean": sum(self.version - 1 - t.policy_version for t in kept) / n,
                "policy_version": float(self.version),
            }
        )
        terms = sorted({k for t in kept for k in t.reward_terms})
        for k in terms:
            metrics[f"reward/{k}"] = sum(t.reward_terms.get(k, 0.0) for t in kept) / n
        return metrics

    # ------------------------------------------------------- weights & export
    def _on_rank0_gathered(self, fn):
        """fn(policy) on rank 0 with full (ZeRO-3 gathered) parameters; None elsewhere. Collective."""
        if not self.zero3:
            return fn(self.policy) if self.rank == 0 else None
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(self.policy.parameters()), modifier_rank=None):
            return fn(self.policy) if self.rank == 0 else None

    def state_dict_for_actors(self) -> dict[str, torch.Tensor] | None:
        """Full HF-layout weights (LoRA merged) on rank 0, None elsewhere. Collective."""
        state = self._on_rank0_gathered(merged_state_dict)
        return {k: v.cpu() for k, v in state.items()} if state is not None else None

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
                return None, head
            return merged_state_dict(policy), head

        result = self._on_rank0_gathered(collect)
        if self.rank != 0:
            barrier()
            return None
        state, value_head = result
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

    # ------------------------------------------------------------ checkpoints
    def should_checkpoint(self) -> bool:
        interval = self.cfg.checkpoint_interval
        return interval > 0 and self.step > 0 and self.step % interval == 0

    def save_checkpoint(self, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """DeepSpeed state + RNG + trainer state under directory/step_N; `latest` moves last."""
        root = Path(directory)
        tag = f"step_{self.step:08d}"
        state = {
            "step": self.step,
            "version": self.version,
            "kl_ctl": self.kl_ctl.state_dict(),
            "extra": extra or {},
        }
        self.engine.save_checkpoint(str(root), tag=tag, client_state=state, save_latest=False)
        save_rng(root / tag, self.rank, self.generator)
        barrier()
        if self.rank == 0:
            write_json(root / tag / "trainer_state.json", {**state, "world_size": self.world_size})
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
        path, client = self.engine.load_checkpoint(str(root), tag=tag)
        if path is None:
            raise FileNotFoundError(f"DeepSpeed could not load checkpoint {root / tag}")
        self.step = int(client["step"])
        self.version = int(client["version"])
        self.kl_ctl.load_state_dict(client["kl_ctl"])
        load_rng(root / tag, self.rank, self.generator)
        return dict(client.get("extra", {}))
