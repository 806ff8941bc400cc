"""Turn a training checkpoint into the shipped HF artifact (bf16 safetensors + card + sums)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from transformers import AutoTokenizer

from actorlearner.base_model import CHECKSUM_FILE, sha256
from actorlearner.base_model.data import TOKENIZER_DIR
from actorlearner.base_model.model import ModelConfig, build_model
from actorlearner.base_model.train import CHECKPOINT

ABILITIES_FILE = "abilities.json"


def export_checkpoint(work_dir: str | Path, target: str | Path, evaluate: bool = True) -> Path:
    """Write config, bf16 weights, tokenizer, model card and SHA256SUMS to `target`."""
    work_dir, target = Path(work_dir), Path(target)
    ckpt_path = work_dir / CHECKPOINT
    if not ckpt_path.exists():
        raise FileNotFoundError(f"no checkpoint at {ckpt_path}: train first (see --out)")
    ckpt = torch.load(ckpt_path, weights_only=False, map_location="cpu")
    run_cfg = json.loads((work_dir / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(work_dir / "data" / TOKENIZER_DIR)
    model = build_model(ModelConfig(**run_cfg["model"]), tokenizer)
    model.load_state_dict(ckpt["model"])
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    model.to(torch.bfloat16).save_pretrained(target, safe_serialization=True)  # type: ignore[arg-type]
    tokenizer.save_pretrained(target)
    state = ckpt["state"]
    abilities = {}
    if evaluate:
        from actorlearner.base_model.evaluate import measure_abilities

        abilities = measure_abilities(target)
    from actorlearner.base_model.card import write_model_card

    write_model_card(target, run_cfg, state, abilities, work_dir)
    write_checksums(target)
    return target


def write_checksums(target: Path) -> None:
    files = sorted(p for p in target.iterdir() if p.is_file() and p.name != CHECKSUM_FILE)
    lines = [f"{sha256(p)}  {p.name}" for p in files]
    (target / CHECKSUM_FILE).write_text("\n".join(lines) + "\n")
