"""SFT data: chat JSONL -> token ids with a loss mask on assistant replies; length buckets.

Each line: {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...], ...}.
Prompts are tokenized the way rollouts tokenize them (the rendered history up to and
including the assistant header, as one string) and each reply separately, so SFT sees
exactly the token layout the policy later generates. Loss covers the reply text and its
closing <|im_end|>; with `refine_only` the explanation before the code fence is masked.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from actorlearner.chat import IM_END, IM_START
from envs.jsonl import numbered_lines

ROLES = ("system", "user", "assistant")
CODE_FENCE = "```python"


@dataclass
class SFTExample:
    input_ids: list[int]
    loss_mask: list[int]  # 1 where input_ids[i] is a trained target token

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class SFTBatch:
    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T]
    loss_mask: torch.Tensor  # [B, T-1] float, aligned with targets input_ids[:, 1:]

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, rows: Sequence[int]) -> SFTBatch:
        idx = torch.as_tensor(list(rows), dtype=torch.long)
        return SFTBatch(self.input_ids[idx], self.attention_mask[idx], self.loss_mask[idx])


def _check_record(record: object, where: str) -> list[dict[str, str]]:
    if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
        raise ValueError(f"{where}: expected an object with a 'messages' list")
    messages = record["messages"]
    for k, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise ValueError(f"{where}: message {k} needs a 'role' in {ROLES}")
        if not isinstance(m.get("content"), str):
            raise ValueError(f"{where}: message {k} needs a string 'content'")
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError(f"{where}: no assistant message, so nothing to train on")
    return messages


def load_records(path: str | Path) -> list[list[dict[str, str]]]:
    """Read the message lists of an SFT JSONL; a malformed line raises with file:line."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"SFT data {path} does not exist (write it with `collect`)")
    out = []
    for lineno, line in numbered_lines(path):
        where = f"{path}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: invalid JSON ({exc.msg})") from exc
        out.append(_check_record(record, where))
    if not out:
        raise ValueError(f"{path}: no SFT records")
    return out


def reply_split(content: str, refine_only: bool) -> tuple[str, str]:
    """(masked prefix, trained part) of a reply: refine-only trains from the code fence on."""
    if not refine_only:
        return "", content
    start = content.rfind(CODE_FENCE)
    return (content[:start], content[start:]) if start > 0 else ("", content)


def tokenize_messages(
    messages: list[dict[str, str]], tokenizer, refine_only: bool = False, max_length: int = 0
) -> SFTExample:
    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    ids: list[int] = []
    mask: list[int] = []

    def add(text: str, trained: bool) -> None:
        piece = encode(text)
        ids.extend(piece)
        mask.extend([int(trained)] * len(piece))

    pending = ""
    for m in messages:
        if m["role"] != "assistant":
            pending += f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n"
            continue
        add(pending + f"{IM_START}assistant\n", False)
        masked, trained = reply_split(m["content"], refine_only)
        add(masked, False)
        add(trained, True)
        add(IM_END, True)
        pending = "\n"
    if max_length and len(ids) > max_length:
        ids, mask = ids[:max_length], mask[:max_length]
    return SFTExample(ids, mask)


def load_examples(
    path: str | Path, tokenizer, refine_only: bool = False, max_length: int = 0
) -> list[SFTExample]:
    return [tokenize_messages(m, tokenizer, refine_only, max_length) for m in load_records(path)]


def length_buckets(
    lengths: Sequence[int], batch_tokens: int, seed: int, window: int = 64
) -> list[list[int]]:
    """Batches of similar-length examples within a padded-token budget.

    Shuffle, sort each window of `window` examples by length, pack greedily while
    len(batch) * longest <= batch_tokens, then shuffle the batch order. Deterministic
    in `seed`, so a resumed run rebuilds the same epoch.
    """
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    for w in range(0, len(order), window):
        current: list[int] = []
        longest = 0
        for i in sorted(order[w : w + window], key=lambda i: lengths[i]):
            longest_if = max(longest, lengths[i])
            if current and longest_if * (len(current) + 1) > batch_tokens:
                batches.append(current)
                current, longest_if = [], lengths[i]
            current.append(i)
            longest = longest_if
        if current:
            batches.append(current)
    rng.shuffle(batches)
    return batches


def collate_sft(examples: Sequence[SFTExample], pad_id: int) -> SFTBatch:
    length = max(len(e) for e in examples)
    b = len(examples)
    input_ids = torch.full((b, length), pad_id, dtype=torch.long)
    attention = torch.zeros((b, length), dtype=torch.long)
    loss_mask = torch.zeros((b, length - 1))
    for i, e in enumerate(examples):
        n = len(e)
        input_ids[i, :n] = torch.tensor(e.input_ids)
        attention[i, :n] = 1
        loss_mask[i, : n - 1] = torch.tensor(e.loss_mask[1:], dtype=torch.float)
    return SFTBatch(input_ids, attention, loss_mask)


def split_holdout(
    examples: list[SFTExample], fraction: float, seed: int
) -> tuple[list[SFTExample], list[SFTExample]]:
    """(train, held-out) with a seeded shuffle; at least one held-out example if fraction > 0."""
    if fraction <= 0:
        return examples, []
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, int(len(examples) * fraction))
    if n_eval >= len(examples):
        raise ValueError(
            f"eval_fraction {fraction} leaves no training data ({len(examples)} examples)"
        )
    return [examples[i] for i in order[n_eval:]], [examples[i] for i in order[:n_eval]]
