"""Load any Hugging Face causal LM and its tokenizer, with the project's chat template.

A model is named by a local directory (the usual case here) or a hub name (on
machines that can reach a hub). Loading fails early with a message that says what
was looked for and how to fix it, rather than with a deep transformers traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from actorlearner.chat import CHAT_TEMPLATE, IM_END

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


@dataclass(frozen=True)
class ModelSpec:
    """Where a policy comes from and how to place it."""

    path: str
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    trust_remote_code: bool = False


def resolve_device(device: str = "auto") -> torch.device:
    """`auto` picks CUDA when present, else CPU; an explicit CUDA request without a GPU fails."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device {device!r} requested but no CUDA GPU is visible; use device='cpu'"
        )
    return dev


def resolve_dtype(
    dtype: str | torch.dtype = "auto", device: torch.device | None = None
) -> torch.dtype:
    """`auto` = bfloat16 on GPUs that support it, float32 on CPU (exact logprobs, fast enough)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device is not None and device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of: auto, {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def _looks_local(path: str) -> bool:
    return path.startswith((".", "/", "~")) or Path(path).exists() or path.count("/") > 1


def check_model_path(path: str | Path) -> str:
    """Return `path` as a string, or raise a clear error if a local model directory is missing."""
    path = str(path)
    if _looks_local(path):
        p = Path(path).expanduser()
        if not p.is_dir():
            raise FileNotFoundError(
                f"model directory {str(p)!r} does not exist; build one with "
                "`actorlearner.tiny.build_tiny_model(dir)` or the base-model script, "
                "or pass a Hugging Face hub name on a machine that can reach the hub"
            )
        if not (p / "config.json").is_file():
            raise FileNotFoundError(
                f"{str(p)!r} has no config.json, so it is not a Hugging Face model directory; "
                "point to the folder written by `save_pretrained`"
            )
        return str(p)
    return path


def load_tokenizer(path: str | Path, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """Load a tokenizer; give it the project's chat template if it has none, and a pad token."""
    path = check_model_path(path)
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise OSError(
            f"could not load a tokenizer from {path!r} ({exc}); pass a local model directory, "
            "or a hub name on a machine with hub access"
        ) from exc
    if not getattr(tok, "chat_template", None):
        tok.chat_template = CHAT_TEMPLATE
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    path: str | Path,
    dtype: str | torch.dtype = "auto",
    device: str = "auto",
    trust_remote_code: bool = False,
) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """Load `(model, tokenizer)` in eval mode on the chosen device and dtype."""
    path = check_model_path(path)
    dev = resolve_device(device)
    tok = load_tokenizer(path, trust_remote_code)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=resolve_dtype(dtype, dev), trust_remote_code=trust_remote_code
        )
    except OSError as exc:
        raise OSError(
            f"could not load a causal LM from {path!r} ({exc}); pass a local model directory, "
            "or a hub name on a machine with hub access"
        ) from exc
    model = model.to(dev)  # type: ignore[arg-type]
    return model.eval(), tok


def stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> tuple[int, ...]:
    """The ids that end an assistant turn: `<|im_end|>` if the vocabulary has it, and EOS."""
    ids = []
    im_end = tokenizer.convert_tokens_to_ids(IM_END)
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
        ids.append(im_end)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return tuple(ids)
