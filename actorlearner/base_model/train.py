"""Pretraining loop for the base model: wall-clock budgeted, checkpointed, exactly resumable.

The learning rate follows warmup, a constant plateau, then a linear decay over the last
part of the *time* budget, so the run ends annealed whenever the budget runs out,
whatever the machine's load was.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm
from transformers import AutoTokenizer

from actorlearner.base_model.data import TOKENIZER_DIR, BatchSampler, DataConfig, prepare
from actorlearner.base_model.model import ModelConfig, build_model

CHECKPOINT = "checkpoint.pt"
LOG_FILE = "train_log.jsonl"


@dataclass
class TrainConfig:
    out: str = "base_model_work"
    seq_len: int = 512
    batch_size: int = 4
    copy_fraction: float = 0.5
    # From `late_phase_step` on, rows are copy tasks with `late_copy_fraction` (None: no phase).
    late_phase_step: int | None = None
    late_copy_fraction: float = 0.85
    lr: float = 1.5e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 50
    decay_fraction: float = 0.25
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    max_minutes: float = 95.0
    max_steps: int = 1_000_000
    checkpoint_minutes: float = 4.0
    threads: int = 1
    bf16: bool = True
    seed: int = 0
    # Continued pretraining: start from another run's weights (fresh optimizer and schedule).
    init_from: str | None = None
    # Score only the assistant replies of copy-task rows (corpus rows are always scored).
    reply_loss_only: bool = False
    # Share of copy tasks with natural names (real identifiers, or the function's own).
    natural_name_share: float = 0.0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)


def lr_at(step: int, elapsed_s: float, cfg: TrainConfig) -> float:
    """Warmup by steps, then plateau, then linear decay over the last `decay_fraction` of time."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = elapsed_s / (cfg.max_minutes * 60)
    start = 1 - cfg.decay_fraction
    if frac <= start:
        return cfg.lr
    progress = min(1.0, (frac - start) / cfg.decay_fraction)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * (1 - progress))


def _save(path: Path, model, optimizer, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "state": state,
            "rng": {
                "torch": torch.get_rng_state(),
                "numpy": np.random.get_state(),
                "python": random.getstate(),
            },
        },
        tmp,
    )
    tmp.replace(path)


def _optimizer(model, cfg: TrainConfig) -> torch.optim.AdamW:
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8)


def _init_from(model, src: Path) -> dict:
    """Load another run's final weights; returns that run's config and totals for the card."""
    ckpt_path = src / CHECKPOINT
    if not ckpt_path.exists():
        raise FileNotFoundError(f"--init-from {src}: no {CHECKPOINT} there; train that run first")
    ckpt = torch.load(ckpt_path, weights_only=False, map_location="cpu")
    model.load_state_dict(ckpt["model"])
    prior = {k: ckpt["state"][k] for k in ("step", "tokens", "copy_tokens", "train_seconds")}
    prior["config"] = json.loads((src / "config.json").read_text())
    prior["prior"] = ckpt["state"].get("prior")
    return prior


def train(cfg: TrainConfig, resume: bool = False) -> dict:
    """Train until the time or step budget is spent; returns the final state."""
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    data_dir = out / "data"
    if cfg.init_from and not data_dir.exists():
        # The weights only fit the tokenizer they were trained with: reuse the source's data.
        src_data = Path(cfg.init_from) / "data"
        if src_data.exists():
            shutil.copytree(src_data, data_dir)
    stats = prepare(data_dir, cfg.data)
    tokenizer = AutoTokenizer.from_pretrained(data_dir / TOKENIZER_DIR)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, tokenizer)
    optimizer = _optimizer(model, cfg)
    state: dict[str, Any] = {
        "step": 0,
        "tokens": 0,
        "copy_tokens": 0,
        "train_seconds": 0.0,
        "loss": None,
    }
    ckpt_path = out / CHECKPOINT
    if resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        state = ckpt["state"]
        torch.set_rng_state(ckpt["rng"]["torch"])
        np.random.set_state(ckpt["rng"]["numpy"])
        random.setstate(ckpt["rng"]["python"])
    elif ckpt_path.exists():
        raise FileExistsError(
            f"{ckpt_path} exists: pass --resume to continue it, or use a new --out"
        )
    elif cfg.init_from:
        state["prior"] = _init_from(model, Path(cfg.init_from))
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    state.update(params=sum(p.numel() for p in model.parameters()), data=stats)
    sampler = BatchSampler(
        data_dir,
        tokenizer,
        cfg.seq_len,
        cfg.batch_size,
        cfg.copy_fraction,
        cfg.seed,
        reply_loss_only=cfg.reply_loss_only,
        natural_name_share=cfg.natural_name_share,
    )
    late = cfg.late_phase_step
    model.train()
    budget_s = cfg.max_minutes * 60
    last_ckpt = time.time()
    bar = tqdm(initial=state["step"], desc="pretrain", mininterval=30, dynamic_ncols=False)
    log = (out / LOG_FILE).open("a")
    ema = state["loss"]
    while state["train_seconds"] < budget_s and state["step"] < cfg.max_steps:
        t0 = time.time()
        if late is not None and state["step"] >= late:
            sampler.copy_fraction = cfg.late_copy_fraction
        rows, labels, n_copy = sampler.batch(state["step"])
        lr = lr_at(state["step"], state["train_seconds"], cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            logits = model(input_ids=rows[:, :-1]).logits
        # Mean over scored tokens; a batch with none (replies all cut off) contributes zero.
        loss = torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.size(-1)),
            labels.reshape(-1),
            ignore_index=-100,
            reduction="sum",
        ) / (labels != -100).sum().clamp(min=1)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        dt = time.time() - t0
        n_tok = rows.numel() - rows.size(0)
        state["step"] += 1
        state["tokens"] += n_tok
        state["copy_tokens"] += n_copy * cfg.seq_len
        state["train_seconds"] += dt
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        state["loss"] = ema
        bar.update(1)
        bar.set_postfix(loss=f"{ema:.3f}", tok_s=f"{n_tok / dt:.0f}", lr=f"{lr:.2e}", refresh=False)
        if state["step"] % 10 == 0:
            log.write(
                json.dumps(
                    {
                        "step": state["step"],
                        "loss": round(loss.item(), 4),
                        "ema_loss": round(ema, 4),
                        "lr": lr,
                        "grad_norm": round(float(grad_norm), 3),
                        "tokens": state["tokens"],
                        "train_seconds": round(state["train_seconds"], 1),
                        "tok_per_s": round(n_tok / dt, 1),
                    }
                )
                + "\n"
            )
            log.flush()
        if time.time() - last_ckpt > cfg.checkpoint_minutes * 60:
            _save(ckpt_path, model, optimizer, state)
            last_ckpt = time.time()
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loss became {loss.item()} at step {state['step']}")
    _save(ckpt_path, model, optimizer, state)
    bar.close()
    log.close()
    return state
