"""Explanation quality as in LeDex Table 9: an LLM judge scores correctness and
helpfulness (1-5) through an OpenAI-compatible endpoint; the rubric is a template file."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from statistics import mean

from actorlearner.teacher import ChatRequest, TeacherClient, TeacherConfig

RUBRIC = Path(__file__).resolve().parents[1] / "templates" / "judge_rubric.txt"
_SCORE = re.compile(r"^\s*(correctness|helpfulness)\s*:\s*([1-5])\b", re.I | re.M)


@dataclass
class JudgeItem:
    context: str  # the first user message: problem, wrong program, execution feedback
    explanation: str
    fixed_code: str


def parse_scores(text: str) -> dict[str, int] | None:
    """{"correctness": c, "helpfulness": h} from the judge's answer, None if either is missing."""
    found = {k.lower(): int(v) for k, v in _SCORE.findall(text)}
    return found if {"correctness", "helpfulness"} <= set(found) else None


def judge_explanations(
    items: list[JudgeItem], config: TeacherConfig, rubric: Path = RUBRIC, seed: int = 0
) -> dict[str, float]:
    """Mean judge scores over `items` (answers that do not follow the format are counted)."""
    if not items:
        return {"judged": 0}
    template = rubric.read_text()
    client = TeacherClient(config)
    client.check()
    requests = [
        ChatRequest(
            messages=[{"role": "user", "content": template.format(**item.__dict__)}],
            temperature=0.0,
            max_tokens=32,
            seed=seed,
        )
        for item in items
    ]
    scores = [parse_scores(texts[0]) for texts in client.chat_many(requests)]
    ok = [s for s in scores if s is not None]
    return {
        "judged": len(ok),
        "unparsed": len(scores) - len(ok),
        "correctness": mean(s["correctness"] for s in ok) if ok else float("nan"),
        "helpfulness": mean(s["helpfulness"] for s in ok) if ok else float("nan"),
    }
