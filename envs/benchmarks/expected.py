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
import re
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
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
    exprs: list[str] = field(default_factory=list)  # the expressions run (see `as_plain_dict`)


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
    """Values of every job's expressions under its reference, from cache or the sandbox.

    The sandbox reports exact builtin types only; where the reference returns a dict
    subclass (Counter, defaultdict, OrderedDict, which `==` treats as a dict), that
    expression is re-run as `{**(expr)}` and the returned `exprs` say so: tests must
    evaluate the same expression in the candidate.
    """
    out = _values(jobs, cache_file, progress)
    retry = []
    for job in jobs:
        wrap = {i for i, why in out[job.key].errors.items() if DICT_SUBCLASS_ERROR.search(why)}
        if wrap:
            exprs = [as_plain_dict(e) if i in wrap else e for i, e in enumerate(job.exprs)]
            retry.append(ReferenceJob(job.key, job.program, exprs))
    if retry:
        out.update(_values(retry, cache_file, progress))
    return out


DICT_SUBCLASS_ERROR = re.compile(
    r"EncodeError: cannot report a value of type '(Counter|defaultdict|OrderedDict)'"
)


def as_plain_dict(expr: str) -> str:
    """The value of `expr` as an exact dict, without a name lookup the program could shadow."""
    return f"{{**({expr})}}"


def _values(jobs, cache_file, progress) -> dict[str, ReferenceValues]:
    cached = _load(cache_file) if cache_file else {}
    todo = [job for job in jobs if _cache_key(job) not in cached]
    if todo:
        _compute(todo, cached, cache_file, progress or _bar(todo))
    return {
        job.key: replace(_from_cache(cached[_cache_key(job)]), exprs=list(job.exprs))
        for job in jobs
    }


def _bar(todo: Sequence[ReferenceJob]) -> Callable[[int, int], None]:
    """A progress bar on stderr for the one-off computation (it can take minutes)."""
    from tqdm.auto import tqdm

    n = sum(len(j.exprs) for j in todo)
    bar = tqdm(
        total=None,
        desc=f"expected outputs for {n} tests (once per machine)",
        unit="batch",
        leave=False,
    )

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return update


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
    failures: list[str] = []
    failed: set[str] = set()
    batch = 64
    for lo in range(0, len(chunks), batch):
        part = chunks[lo : lo + batch]
        verdicts = run_batch(
            [(job.program, [TestCase(e) for e in exprs]) for job, _, exprs in part],
            limits=REFERENCE_LIMITS,
        )
        for (job, start, _), verdict in zip(part, verdicts, strict=True):
            key = _cache_key(job)
            entry = partial.setdefault(
                key, {"values": {}, "errors": {}, "seconds": 0.0, "chunks": 0}
            )
            problem = _record(entry, start, verdict)
            if problem:
                failures.append(f"{job.key}: {problem}")
                failed.add(key)
            entry["seconds"] += verdict.duration_s
            entry["chunks"] += 1
            if entry["chunks"] * CHUNK >= len(job.exprs) and key not in failed:
                cached[key] = partial.pop(key)
                del cached[key]["chunks"]
        if cache_file:
            _save(cache_file, cached)  # only complete, clean entries: an interrupted run resumes
        if progress:
            progress(min(lo + batch, len(chunks)), len(chunks))
    if failures:
        raise ReferenceError(
            f"{len(failures)} reference run(s) failed in the sandbox (is the sandbox working?): "
            + "; ".join(failures[:5])
        )


def _record(entry: dict, start: int, verdict) -> str | None:
    """Store the values (or the exception each test raised); say why when the run failed."""
    for outcome in verdict.outcomes:
        i = str(start + outcome.index)
        if outcome.status == "passed":
            entry["values"][i] = encode(outcome.value)
        elif outcome.status == "error":  # the reference raised on this input: deterministic
            entry["errors"][i] = f"{outcome.error_type}: {outcome.message}"
    if verdict.status in ("timeout", "error") and (verdict.error_type or not verdict.outcomes):
        return f"{verdict.error_type}: {verdict.message}"
    return None


def _from_cache(entry: dict) -> ReferenceValues:
    return ReferenceValues(
        values={int(i): decode(v) for i, v in entry["values"].items()},
        errors={int(i): msg for i, msg in entry["errors"].items()},
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
