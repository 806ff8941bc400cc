"""Expected outputs computed by running reference solutions in the sandbox, cached on disk.

EvalPlus stores only test *inputs*; the expected output of each is what the canonical
solution returns on it. Some MBPP/HumanEval asserts also compare against an expression
(`set((4, 5))`) rather than a literal. Both are computed here, once per machine: values
go to `<cache>/expected/<name>-<sha>.json.gz` (atomic writes after every batch, so an
interrupted run resumes where it stopped). The cache directory is
`$ACTORLEARNER_CACHE` or `~/.cache/actorlearner`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sandbox.codec import decode
from sandbox.harness import encode
from sandbox.types import Limits, TestCase

CACHE_VERSION = 1
# References get far more room than candidates: MBPP task 123 alone takes ~2.6 s.
REFERENCE_LIMITS = Limits(timeout_s=120.0, cpu_s=120, memory_mb=4096, output_bytes=1 << 16)
CHUNK = 200  # expressions per sandbox job (one slow input cannot hold up the rest)


@dataclass
class ReferenceJob:
    """Evaluate `exprs` against `program` (a trusted reference); `key` names the values."""

    key: str
    program: str
    exprs: list[str]


@dataclass
class ReferenceValues:
    values: dict[int, object] = field(default_factory=dict)  # expr index -> value
    errors: dict[int, str] = field(default_factory=dict)  # expr index -> why no value
    seconds: float = 0.0  # sandbox wall time of the reference over these exprs


class ReferenceError(RuntimeError):
    """A reference solution failed where a value was required."""


def cache_dir() -> Path:
    return Path(os.environ.get("ACTORLEARNER_CACHE", Path.home() / ".cache" / "actorlearner"))


def cache_path(name: str, data_sha: str) -> Path:
    tag = hashlib.sha256(
        f"{name}|{data_sha}|{CACHE_VERSION}|{sys.version_info[:2]}".encode()
    ).hexdigest()[:16]
    safe = name.replace("+", "plus").replace("/", "_")
    return cache_dir() / "expected" / f"{safe}-{tag}.json.gz"


def reference_values(
    jobs: Sequence[ReferenceJob],
    cache_file: Path | None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, ReferenceValues]:
    """Values of every job's expressions under its reference, from cache or the sandbox."""
    cached = _load(cache_file) if cache_file else {}
    todo = [job for job in jobs if _cache_key(job) not in cached]
    if todo:
        _compute(todo, cached, cache_file, progress)
    return {job.key: _from_cache(cached[_cache_key(job)]) for job in jobs}


def _cache_key(job: ReferenceJob) -> str:
    digest = hashlib.sha256(job.program.encode())
    for expr in job.exprs:
        digest.update(b"\0" + expr.encode())
    return f"{job.key}|{digest.hexdigest()[:16]}"


def _compute(todo, cached, cache_file, progress) -> None:
    from sandbox import run_batch

    chunks = [
        (job, start, job.exprs[start : start + CHUNK])
        for job in todo
        for start in range(0, max(len(job.exprs), 1), CHUNK)
    ]
    partial: dict[str, dict] = {}
    batch = 64
    for lo in range(0, len(chunks), batch):
        part = chunks[lo : lo + batch]
        verdicts = run_batch(
            [(job.program, [TestCase(e) for e in exprs]) for job, _, exprs in part],
            limits=REFERENCE_LIMITS,
        )
        for (job, start, _), verdict in zip(part, verdicts, strict=True):
            entry = partial.setdefault(
                _cache_key(job), {"values": {}, "errors": {}, "seconds": 0.0}
            )
            entry["seconds"] += verdict.duration_s
            _record(entry, start, verdict)
            if _complete(job, entry):
                cached[_cache_key(job)] = partial.pop(_cache_key(job))
        if cache_file:
            _save(cache_file, cached)
        if progress:
            progress(min(lo + batch, len(chunks)), len(chunks))


def _record(entry: dict, start: int, verdict) -> None:
    for outcome in verdict.outcomes:
        i = start + outcome.index
        if outcome.status == "passed" or (
            outcome.status == "failed" and outcome.error_type is None
        ):
            entry["values"][str(i)] = encode(outcome.value)
        else:
            why = outcome.message or outcome.error_type or outcome.status
            entry["errors"][str(i)] = f"{outcome.error_type or outcome.status}: {why}"
    if verdict.status in ("timeout", "error") and not verdict.outcomes:
        entry["errors"][f"program@{start}"] = f"{verdict.error_type}: {verdict.message}"


def _complete(job: ReferenceJob, entry: dict) -> bool:
    done = len(entry["values"]) + sum(1 for k in entry["errors"] if k.isdigit())
    return done >= len(job.exprs) or any(k.startswith("program@") for k in entry["errors"])


def _from_cache(entry: dict) -> ReferenceValues:
    return ReferenceValues(
        values={int(i): decode(v) for i, v in entry["values"].items()},
        errors={int(i) if i.isdigit() else -1: msg for i, msg in entry["errors"].items()},
        seconds=float(entry["seconds"]),
    )


def _load(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError, EOFError):
        return {}  # a damaged cache is recomputed, never trusted
    return data.get("entries", {}) if data.get("version") == CACHE_VERSION else {}


def _save(path: Path, entries: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as raw, gzip.open(raw, "wt", encoding="utf-8") as f:
            json.dump({"version": CACHE_VERSION, "entries": entries}, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
