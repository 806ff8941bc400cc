"""The embedded base model: a small code LM trained locally that can read and copy code.

`load_base_model()` returns the shipped artifact; `scripts/train_base_model.py` rebuilds it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

BASE_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "base_model"
CHECKSUM_FILE = "SHA256SUMS"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_checksums(model_dir: str | Path = BASE_MODEL_DIR) -> None:
    """Raise a clear error if the artifact is missing or any file differs from SHA256SUMS."""
    model_dir = Path(model_dir)
    sums = model_dir / CHECKSUM_FILE
    if not sums.exists():
        raise FileNotFoundError(
            f"{sums} is missing: the base model artifact is not built. "
            "Run `python scripts/train_base_model.py` (or `--export-only` from a checkpoint)."
        )
    for line in sums.read_text().splitlines():
        expected, name = line.split(maxsplit=1)
        path = model_dir / name.strip()
        if not path.exists():
            raise FileNotFoundError(f"{path} listed in {sums} is missing; re-export the artifact.")
        actual = sha256(path)
        if actual != expected:
            raise ValueError(
                f"checksum mismatch for {path}: expected {expected}, got {actual}. The file is "
                "corrupt or was changed; restore it from git or re-export the artifact."
            )


def load_base_model(
    model_dir: str | Path = BASE_MODEL_DIR, dtype: torch.dtype | None = None, verify: bool = True
):
    """(model, tokenizer) of the shipped base model, checksum-verified, in `dtype` (float32)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if verify:
        verify_checksums(model_dir)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype or torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model.eval()
    return model, tokenizer
