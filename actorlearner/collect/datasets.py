"""Assemble the datasets from finished unit records (agreed formats: SFT JSONL, RL pool JSONL)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from actorlearner.collect import prompts
from actorlearner.collect.dedup import normalize_code


def _prov(run_id: str, attempt: dict, temperature: float | None) -> dict:
    by = attempt["by"]
    return {"run": run_id, "model": by, "temperature": None if by == "reference" else temperature}


def _wrong(units: Iterable[dict]) -> Iterator[tuple[dict, dict]]:
    for u in units:
        for s in u["solutions"]:
            if not s["passed"]:
                yield u, s


def _conversation(s: dict, a: dict) -> list[dict]:
    return [*s["messages"], {"role": "assistant", "content": a["reply"]}]


def sft_records(
    units, run_id: str, temperature: float, require_explanation: bool = True
) -> Iterator[dict]:
    """Success trajectories: verified explain-then-refine replies (loss on the assistant turn)."""
    for u, s in _wrong(units):
        for a in s["attempts"]:
            if a["passed"] and (a["explanation"].strip() or not require_explanation):
                yield {
                    "task_id": u["task_id"],
                    "source": u["spec"],
                    "messages": _conversation(s, a),
                    "explanation": a["explanation"],
                    "code": a["code"],
                    "wrong_code": s["code"],
                    "provenance": _prov(run_id, a, temperature),
                }


def failure_records(units, run_id: str, temperature: float) -> Iterator[dict]:
    """Failure trajectories: replies whose code (if any) does not pass, with their explanation."""
    for u, s in _wrong(units):
        for a in s["attempts"]:
            if not a["passed"]:
                yield {
                    "task_id": u["task_id"],
                    "source": u["spec"],
                    "messages": _conversation(s, a),
                    "explanation": a["explanation"],
                    "code": a["code"],
                    "wrong_code": s["code"],
                    "status": a["status"],
                    "pass_rate": a["pass_rate"],
                    "feedback": a["feedback"],
                    "provenance": _prov(run_id, a, temperature),
                }


def _verified(s: dict) -> list[dict]:
    return [
        {"explanation": a["explanation"], "code": a["code"]} for a in s["attempts"] if a["passed"]
    ]


def pool_records(units, run_id: str, min_references: int = 1) -> Iterator[dict]:
    """The RL pool: one wrong solution per line, with its verified references."""
    for u, s in _wrong(units):
        refs = _verified(s)
        if len(refs) >= min_references:
            yield {
                "task_id": u["task_id"],
                "source": u["spec"],
                "wrong_code": s["code"],
                "feedback": s["feedback"],
                "references": refs,
                "origin": s["origin"],
                "provenance": {"run": run_id},
            }


def reference_records(units, run_id: str) -> Iterator[dict]:
    """Per problem: every distinct verified fix with its explanation (for CodeBLEU/explanation rewards)."""
    for u in units:
        seen, refs = set(), []
        for s in u["solutions"]:
            if s["passed"]:
                continue
            for ref in _verified(s):
                key = (normalize_code(ref["code"]), ref["explanation"])
                if key not in seen:
                    seen.add(key)
                    refs.append({**ref, "wrong_code": s["code"]})
        if refs:
            yield {
                "task_id": u["task_id"],
                "source": u["spec"],
                "references": refs,
                "provenance": {"run": run_id},
            }


def correct_records(units, run_id: str) -> Iterator[dict]:
    """Correct initial solutions as code-generation SFT examples."""
    for u in units:
        for s in u["solutions"]:
            if s["passed"]:
                yield {
                    "task_id": u["task_id"],
                    "source": u["spec"],
                    "messages": [
                        {"role": "system", "content": prompts.GENERATE_SYSTEM},
                        {"role": "user", "content": u["prompt"].strip()},
                        {"role": "assistant", "content": prompts.fenced(s["code"])},
                    ],
                    "code": s["code"],
                    "origin": s["origin"],
                    "count": s["count"],
                    "provenance": {"run": run_id},
                }
