"""Tiny random models built on the fly, for tests where only mechanics matter."""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from actorlearner.tokenizer import save_tokenizer, train_bpe_tokenizer

_CORPUS_MODULES = ("textwrap", "functools", "json.decoder", "string", "heapq")


def _corpus() -> list[str]:
    import importlib

    texts = [inspect.getsource(importlib.import_module(m)) for m in _CORPUS_MODULES]
    return texts + ["def f(x):\n    return x + 1\n", "The bug is an off-by-one error."]


def build_tiny_model(
    out_dir: str | Path, vocab_size: int = 512, hidden: int = 64, layers: int = 2, seed: int = 0
) -> Path:
    """Write a random tiny Llama + locally trained BPE tokenizer to `out_dir` (HF layout)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_bpe_tokenizer(_corpus(), vocab_size)
    save_tokenizer(tokenizer, out)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    return out
