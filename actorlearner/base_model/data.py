"""Prepared training data: tokenizer, tokenized corpus, function pool, and step-seeded batches.

Batches are a pure function of (seed, step), so a resumed run sees exactly the batches an
uninterrupted one would have.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from actorlearner.base_model.copy_tasks import make_task
from actorlearner.base_model.corpus import CorpusConfig, extract_functions, iter_source_files
from actorlearner.base_model.names import identifier_pool
from actorlearner.chat import EOS, IM_START
from actorlearner.tokenizer import save_tokenizer, train_bpe_tokenizer

TOKENS_FILE = "corpus_tokens.npy"
FUNCTIONS_FILE = "functions.json"
TOKENIZER_DIR = "tokenizer"
STATS_FILE = "data_stats.json"
_FIT_TRIES = 8


@dataclass
class DataConfig:
    vocab_size: int = 6144
    corpus_bytes: int = 32_000_000
    tokenizer_bytes: int = 10_000_000
    tokenizer_chat_samples: int = 3000
    seed: int = 0
    roots: list[str] | None = None  # default: the standard library and site-packages


def prepare(out_dir: Path, cfg: DataConfig) -> dict:
    """Build the tokenizer, token array and function pool under `out_dir` (idempotent)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / STATS_FILE).exists():
        return json.loads((out_dir / STATS_FILE).read_text())
    corpus_cfg = CorpusConfig(max_total_bytes=cfg.corpus_bytes, seed=cfg.seed)
    if cfg.roots:
        corpus_cfg.roots = list(cfg.roots)
    files = list(iter_source_files(corpus_cfg))
    texts = [text for _, text in files]
    functions = sorted({f for text in texts for f in extract_functions(text)})
    rng = random.Random(cfg.seed)
    chats = [make_task(rng.choice(functions), rng) for _ in range(cfg.tokenizer_chat_samples)]
    tok_texts, used = [], 0
    for text in texts:
        if used >= cfg.tokenizer_bytes:
            break
        tok_texts.append(text)
        used += len(text)
    tokenizer = train_bpe_tokenizer(tok_texts + [c for c in chats if c], cfg.vocab_size)
    save_tokenizer(tokenizer, out_dir / TOKENIZER_DIR)
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    eos = tokenizer.convert_tokens_to_ids(EOS)
    flat = np.fromiter((t for doc in ids for t in [*doc, eos]), dtype=np.uint16)
    np.save(out_dir / TOKENS_FILE, flat)
    (out_dir / FUNCTIONS_FILE).write_text(json.dumps(functions))
    stats = {
        "files": len(files),
        "corpus_bytes": sum(len(t) for t in texts),
        "corpus_tokens": int(flat.size),
        "functions": len(functions),
        "vocab_size": len(tokenizer),
        "roots": corpus_cfg.roots,
    }
    (out_dir / STATS_FILE).write_text(json.dumps(stats, indent=2))
    return stats


class BatchSampler:
    """Mixes corpus windows and packed copy-task chats; batch `step` depends only on (seed, step)."""

    def __init__(
        self,
        data_dir: Path,
        tokenizer: PreTrainedTokenizerBase,
        seq_len: int,
        batch_size: int,
        copy_fraction: float,
        seed: int,
        reply_loss_only: bool = False,
        natural_name_share: float = 0.0,
    ):
        self.tokens = np.load(data_dir / TOKENS_FILE, mmap_mode="r")
        self.functions: list[str] = json.loads((data_dir / FUNCTIONS_FILE).read_text())
        self.tokenizer = tokenizer
        self.eos = tokenizer.convert_tokens_to_ids(EOS)
        self.seq_len, self.batch_size = seq_len, batch_size
        self.copy_fraction, self.seed = copy_fraction, seed
        self.reply_loss_only = reply_loss_only
        self.natural_name_share = natural_name_share
        self.name_pool = identifier_pool(self.functions) if natural_name_share > 0 else None
        self.im_start = tokenizer.convert_tokens_to_ids(IM_START)

    def _copy_row(self, rng: random.Random) -> tuple[list[int], list[bool]]:
        """Packed chats and, per token, whether it is scored (all, or only assistant replies)."""
        row: list[int] = []
        scored: list[bool] = []
        while len(row) < self.seq_len + 1:
            ids = self._chat_ids(rng)
            if self.reply_loss_only:
                # A chat cut at the row's end loses its reply, so prefer one that fits.
                for _ in range(_FIT_TRIES):
                    if len(row) + len(ids) <= self.seq_len + 1:
                        break
                    ids = self._chat_ids(rng)
            row += ids
            scored += self._reply_mask(ids)
        return row[: self.seq_len + 1], scored[: self.seq_len + 1]

    def _chat_ids(self, rng: random.Random) -> list[int]:
        while not (
            chat := make_task(
                rng.choice(self.functions), rng, self.name_pool, self.natural_name_share
            )
        ):
            pass
        return self.tokenizer.encode(chat, add_special_tokens=False) + [self.eos]

    def _reply_mask(self, ids: list[int]) -> list[bool]:
        # The prompt's random names cannot be predicted; scoring them only adds noise to
        # the copy signal, so the late phase may score the final assistant turn alone.
        if not self.reply_loss_only:
            return [True] * len(ids)
        last = max(i for i, t in enumerate(ids) if t == self.im_start)
        return [i > last for i in range(len(ids))]

    def _corpus_row(self, rng: random.Random) -> list[int]:
        start = rng.randrange(len(self.tokens) - self.seq_len - 1)
        return self.tokens[start : start + self.seq_len + 1].astype(np.int64).tolist()

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Token rows (batch, seq_len + 1), next-token labels (-100 where not scored), and
        how many rows are copy tasks."""
        rng = random.Random(self.seed * 1_000_003 + step)
        rows, masks, n_copy = [], [], 0
        for _ in range(self.batch_size):
            if rng.random() < self.copy_fraction:
                row, mask = self._copy_row(rng)
                n_copy += 1
            else:
                row = self._corpus_row(rng)
                mask = [True] * len(row)
            rows.append(row)
            masks.append(mask)
        tokens = torch.tensor(rows, dtype=torch.long)
        labels = tokens[:, 1:].masked_fill(~torch.tensor(masks)[:, 1:], -100)
        return tokens, labels, n_copy
