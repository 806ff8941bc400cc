"""One unit of work: every step of the pipeline for one problem.

sample N solutions -> dedup -> execute -> for each wrong one, K explain+refine
replies (+ given references) -> dedup -> execute -> a JSON-able unit record.
The record holds everything the datasets are later assembled from.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from actorlearner.collect import prompts
from actorlearner.collect.config import CollectConfig
from actorlearner.collect.dedup import normalize_code, normalize_text, unique
from actorlearner.collect.generators import ChatModel
from actorlearner.teacher import ChatRequest
from envs.problem import Problem
from sandbox.types import Verdict

RunCodes = Callable[[Problem, list[str]], list[Verdict]]


def unit_seed(seed: int, unit_id: str, stage: str) -> int:
    digest = hashlib.sha256(f"{seed}:{unit_id}:{stage}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


@dataclass
class Models:
    sampler: ChatModel | None  # None: no sampling (problems with given programs only)
    refiner: ChatModel | None  # None: references only


def _verdict_summary(v: Verdict) -> dict:
    return {"status": v.status, "passed": v.passed, "pass_rate": round(v.pass_rate, 4)}


def _initial_solutions(problem: Problem, cfg: CollectConfig, models: Models, shots, uid: str):
    """(origin, code) pairs: the problem's own buggy program and/or model samples."""
    given = problem.metadata.get("initial_code")
    out = [("given", given)] if given else []
    want = cfg.samples_per_problem if (not given or cfg.sample_given) else 0
    if want and models.sampler is not None:
        req = ChatRequest(
            prompts.few_shot_messages(problem, shots),
            n=want,
            temperature=cfg.sample_temperature,
            max_tokens=cfg.sample_max_tokens,
            seed=unit_seed(cfg.seed, uid, "sample"),
        )
        texts = models.sampler.complete([req])[0]
        out += [("sampled", prompts.extract_code(t, problem)) for t in texts]
    return out


def _references(problem: Problem) -> list[str]:
    fixes = problem.metadata.get("reference_fixes") or []
    expls = problem.metadata.get("reference_explanations") or []
    return [prompts.format_reply(e, f) for e, f in zip(expls, fixes, strict=False)]


def _attempt(text: str, by: str, problem: Problem) -> dict:
    parsed = prompts.parse_reply(text, problem)
    code = parsed.code if parsed.has_code else None
    return {
        "by": by,
        "raw": text,
        "explanation": parsed.explanation,
        "code": code,
        "reply": prompts.format_reply(parsed.explanation, code) if code else text,
    }


def collect_problem(
    problem: Problem,
    spec: str,
    uid: str,
    cfg: CollectConfig,
    models: Models,
    run_codes: RunCodes,
    shots: list[Problem],
) -> dict:
    """Run steps 1-4 for one problem and return its unit record."""
    t0 = time.perf_counter()
    drawn = _initial_solutions(problem, cfg, models, shots, uid)
    solutions = _execute_solutions(problem, drawn, run_codes)
    wrong = [s for s in solutions if not s["passed"]]
    t_sample = time.perf_counter()
    _ask_for_fixes(problem, wrong, cfg, models, uid)
    _verify_fixes(problem, wrong, run_codes)
    return {
        "unit_id": uid,
        "spec": spec,
        "task_id": problem.task_id,
        "source": problem.source,
        "prompt": problem.prompt,
        "drawn": len(drawn),
        "solutions": solutions,
        "timing": {
            "sample_s": round(t_sample - t0, 3),
            "refine_s": round(time.perf_counter() - t_sample, 3),
        },
    }


def _execute_solutions(
    problem: Problem, drawn: list[tuple[str, str]], run_codes: RunCodes
) -> list[dict]:
    """Step 2: dedup, execute; wrong ones get feedback and the env's refine prompt."""
    origins: dict[str, str] = {}
    for origin, code in drawn:
        origins.setdefault(normalize_code(code), origin)
    uniq = unique([code for _, code in drawn])
    solutions = []
    for (code, count), v in zip(uniq, run_codes(problem, [c for c, _ in uniq]), strict=True):
        sol = {
            "origin": origins[normalize_code(code)],
            "code": code,
            "count": count,
            **_verdict_summary(v),
        }
        if not v.passed:
            sol["feedback"] = prompts.feedback(problem, v)
            sol["messages"] = prompts.refine_messages(problem, code, sol["feedback"])
            sol["attempts"] = []
        solutions.append(sol)
    return solutions


def _ask_for_fixes(
    problem: Problem, wrong: list[dict], cfg: CollectConfig, models: Models, uid: str
) -> None:
    """Step 3: given references for the problem's own buggy program, plus K model replies each."""
    for s in wrong:
        if s["origin"] == "given":
            s["attempts"] += [_attempt(t, "reference", problem) for t in _references(problem)]
    if models.refiner is not None and cfg.refinements_per_wrong and wrong:
        seed, k = unit_seed(cfg.seed, uid, "refine"), cfg.refinements_per_wrong
        reqs = [
            ChatRequest(
                s["messages"],
                k,
                cfg.refine_temperature,
                max_tokens=cfg.refine_max_tokens,
                seed=seed + i * k,
            )
            for i, s in enumerate(wrong)
        ]
        for s, texts in zip(wrong, models.refiner.complete(reqs), strict=True):
            s["attempts"] += [_attempt(t, models.refiner.label, problem) for t in texts]
    for s in wrong:
        s["attempts"] = _dedup_attempts(s["attempts"])


def _verify_fixes(problem: Problem, wrong: list[dict], run_codes: RunCodes) -> None:
    """Step 4: execute every distinct refined program once; score every reply."""
    codes = [c for c, _ in unique([a["code"] for s in wrong for a in s["attempts"] if a["code"]])]
    results = dict(zip(map(normalize_code, codes), run_codes(problem, codes), strict=True))
    for s in wrong:
        for a in s["attempts"]:
            _score(a, results.get(normalize_code(a["code"])) if a["code"] else None, problem)


def _score(attempt: dict, verdict: Verdict | None, problem: Problem) -> None:
    """Record a reply's verdict (no verdict: the reply had no code) and its feedback."""
    if verdict is None:
        attempt.update(
            status="no_code", passed=False, pass_rate=0.0, feedback=prompts.TEMPLATES.no_code
        )
    else:
        attempt.update(_verdict_summary(verdict), feedback=prompts.feedback(problem, verdict))


def _dedup_attempts(attempts: list[dict]) -> list[dict]:
    """Drop replies identical to an earlier one (same explanation words and same program)."""
    seen, out = set(), []
    for a in attempts:
        key = (
            normalize_text(a["explanation"]),
            normalize_code(a["code"]) if a["code"] else a["raw"],
        )
        if key not in seen:
            seen.add(key)
            out.append(a)
    return out
