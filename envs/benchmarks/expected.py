"""Expected outputs computed by running reference solutions in the sandbox, cached on disk.

EvalPlus stores only test *inputs*; the expected output of each is what the canonical
solution returns on it. Some MBPP/HumanEval asserts also compare against an expression
(`set((4, 5))`) rather than a literal. Both are computed here, once per machine: each
(program, expression) value goes to `<cache>/expected/<name>-<sha>.json.gz` (atomic
writes after every batch, so an interrupted run resumes where it stopped, and any
subset of inputs is served from a full run). The cache directory is
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
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sandbox.codec import decode
from sandbox.harness import encode
from sandbox.types import Limits, TestCase

CACHE_VERSION = 2
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
    exprs: list[str] = field(default_factory=list)  # the expressions run (see `plain_form`)


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

    The sandbox reports exact builtin types only. Where the reference returns a type
    that Python's `==` compares by content anyway (Counter, defaultdict, OrderedDict:
    as a dict) or that EvalPlus judges by presence (re.Match: "is not None"), that
    expression is re-run in a plain form (see `plain_form`), and the returned `exprs`
    say so: tests must evaluate the same expression in the candidate.
    """
    out = _values(jobs, cache_file, progress)
    retry = []
    for job in jobs:
        forms: dict[int, str] = {}
        for i, why in out[job.key].errors.items():
            form = plain_form(job.exprs[i], why)
            if form is not None:
                forms[i] = form
        if forms:
            exprs = [forms.get(i, e) for i, e in enumerate(job.exprs)]
            retry.append(ReferenceJob(job.key, job.program, exprs))
    if retry:
        out.update(_values(retry, cache_file, progress))
    return out


_UNREPORTABLE = re.compile(r"EncodeError: cannot report a value of type '(\w+)'")
_PLAIN_FORMS = {
    "Counter": "{{**({})}}",
    "defaultdict": "{{**({})}}",
    "OrderedDict": "{{**({})}}",
    "Match": "(({}) is not None)",
}


def plain_form(expr: str, error: str) -> str | None:
    """`expr` rewritten to give a reportable value, for the unreportable type named in
    `error` (None: no plain form). Operators only, so no name can be shadowed."""
    found = _UNREPORTABLE.search(error)
    form = _PLAIN_FORMS.get(found.group(1)) if found else None
    return form.format(expr) if form else None


def _values(jobs, cache_file, progress) -> dict[str, ReferenceValues]:
    cached = _load(cache_file) if cache_file else {}
    keys = {job.key: [_entry_key(job.program, e) for e in job.exprs] for job in jobs}
    todo = [(job, i) for job in jobs for i, k in enumerate(keys[job.key]) if k not in cached]
    if todo:
        _compute(todo, cached, cache_file, progress or _bar(len(todo)))
    return {job.key: _from_entries(job, [cached[k] for k in keys[job.key]]) for job in jobs}


def _entry_key(program: str, expr: str) -> str:
    return hashlib.sha256(f"{program}\0{expr}".encode()).hexdigest()[:24]


def _from_entries(job: ReferenceJob, entries: list[list]) -> ReferenceValues:
    out = ReferenceValues(exprs=list(job.exprs))
    for i, (kind, payload, seconds) in enumerate(entries):
        if kind == "v":
            out.values[i] = decode(payload)
        else:
            out.errors[i] = payload
        out.seconds += seconds
    return out


def _bar(n: int) -> Callable[[int, int], None]:
    """A progress bar on stderr for the one-off computation (it can take minutes)."""
    from tqdm.auto import tqdm

    bar = tqdm(
        total=n, desc="expected outputs (computed once per machine)", unit="test", leave=False
    )

    def update(done: int, total: int) -> None:
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return update


def _compute(todo: list[tuple[ReferenceJob, int]], cached: dict, cache_file, progress) -> None:
    """Run the missing (job, expr index) pairs in chunks; cache every value.

    A chunk that times out is re-run one expression at a time; an expression the
    reference cannot finish alone within `REFERENCE_LIMITS` is cached as an error (no
    candidate could be judged on it either).
    """
    from sandbox import run_batch

    by_job: dict[int, tuple[ReferenceJob, list[int]]] = {}
    for job, i in todo:
        by_job.setdefault(id(job), (job, []))[1].append(i)
    queue = [
        (job, idx[lo : lo + CHUNK])
        for job, idx in by_job.values()
        for lo in range(0, len(idx), CHUNK)
    ]
    failures: list[str] = []
    retries: dict[int, int] = defaultdict(int)
    done, batch = 0, 32
    while queue:
        part, queue = queue[:batch], queue[batch:]
        jobs = [(job.program, [TestCase(job.exprs[i]) for i in idx]) for job, idx in part]
        verdicts = run_batch(jobs, limits=REFERENCE_LIMITS)
        for (job, idx), verdict in zip(part, verdicts, strict=True):
            unfinished = _record(cached, job, idx, verdict)
            # Stopped on some input (not at load): retry the rest one by one; an input
            # the reference cannot finish alone is recorded as an error.
            stopped = verdict.error_type in ("Timeout", "Crash")
            if unfinished and verdict.error_type == "SandboxError" and retries[id(job)] < 2:
                retries[id(job)] += 1  # the pool itself failed (e.g. a jail start timed out)
                queue.append((job, unfinished))
                continue
            if unfinished and stopped and len(idx) > 1:
                queue += [(job, [i]) for i in unfinished]
            elif unfinished and stopped:
                why = f"{verdict.error_type}: the reference alone: {verdict.message}"
                cached[_entry_key(job.program, job.exprs[idx[0]])] = ["e", why, 0.0]
                unfinished = []
            elif unfinished:
                failures.append(f"{job.key}: {verdict.error_type}: {verdict.message}")
            done += len(idx) - len(unfinished)
        if cache_file:
            _save(cache_file, cached)
        if progress:
            progress(done, len(todo))
    if failures:
        raise ReferenceError(
            f"{len(failures)} reference run(s) failed in the sandbox (is the sandbox working?): "
            + "; ".join(failures[:5])
        )


def _record(cached: dict, job: ReferenceJob, idx: list[int], verdict) -> list[int]:
    """Cache each value, or the exception the reference raised on that input (that is
    deterministic); return the indices that got neither (the run stopped early)."""
    seconds = verdict.duration_s / max(len(idx), 1)
    unfinished = []
    for outcome in verdict.outcomes:
        i = idx[outcome.index]
        key = _entry_key(job.program, job.exprs[i])
        if outcome.status == "passed":
            cached[key] = ["v", encode(outcome.value), seconds]
        elif outcome.status == "error":
            cached[key] = ["e", f"{outcome.error_type}: {outcome.message}", seconds]
        else:
            unfinished.append(i)
    return unfinished if verdict.outcomes else list(idx)


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
        with (
            os.fdopen(fd, "wb") as raw,
            gzip.open(raw, "wt", encoding="utf-8", compresslevel=1) as f,
        ):
            json.dump({"version": CACHE_VERSION, "entries": entries}, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
