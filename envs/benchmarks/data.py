"""The benchmark files shipped inside the package (gzipped JSONL; see data/README.md)."""

from __future__ import annotations

import gzip
import hashlib
import json
from functools import cache
from importlib import resources
from pathlib import Path

FILES = {
    "humaneval": "humaneval.jsonl.gz",
    "humaneval+": "humanevalplus-v0.1.10.jsonl.gz",
    "mbpp": "mbpp.jsonl.gz",
    "mbpp_sanitized": "mbpp_sanitized.jsonl.gz",
    "mbpp+": "mbppplus-v0.1.0-prerelease.jsonl.gz",
    "humanevalfix": "humanevalpack-python.jsonl.gz",
}


def data_path(name: str) -> Path:
    """Path of the shipped data file of benchmark `name`."""
    if name not in FILES:
        raise KeyError(f"no shipped data for {name!r}; known: {', '.join(FILES)}")
    return Path(str(resources.files("envs.benchmarks") / "data" / FILES[name]))


@cache
def read_records(name: str) -> tuple[dict, ...]:
    """All records of a shipped benchmark file (cached; callers must not mutate them)."""
    with gzip.open(data_path(name), "rt", encoding="utf-8") as f:
        return tuple(json.loads(line) for line in f if line.strip())


@cache
def data_sha256(name: str) -> str:
    return hashlib.sha256(data_path(name).read_bytes()).hexdigest()
