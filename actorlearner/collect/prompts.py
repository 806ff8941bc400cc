"""The texts a model sees during collection.

Refinement prompts come from the environment's templates (`envs.templates`), so
the SFT data shows the policy exactly what `CodeRefine-v0` shows it at reset.
Initial solutions are sampled with a few-shot chat prompt (the paper: 3-shot with
MBPP prompts 2-4).
"""

from __future__ import annotations

import hashlib
import inspect
from functools import lru_cache

from envs import templates as env_templates
from envs.problem import Problem
from sandbox.types import Verdict

GENERATE_SYSTEM = (
    "You are an expert Python programmer. Solve the problem: reply with the whole "
    "program in one ```python code block."
)
TEMPLATES = env_templates.Templates()
Messages = list[dict[str, str]]


def feedback(problem: Problem, verdict: Verdict) -> str:
    return env_templates.render_feedback(verdict, problem.tests, TEMPLATES)


def refine_messages(problem: Problem, wrong_code: str, feedback_text: str) -> Messages:
    """System prompt + the env's first user message (problem, wrong code, feedback)."""
    user = env_templates.first_user_message(problem.prompt, wrong_code, feedback_text, TEMPLATES)
    return [{"role": "system", "content": TEMPLATES.system}, {"role": "user", "content": user}]


def parse_reply(text: str, problem: Problem) -> env_templates.ParsedReply:
    return env_templates.parse_reply(text, problem.entry_point)


def format_reply(explanation: str, code: str) -> str:
    return env_templates.format_reply(explanation, code)


def fenced(code: str) -> str:
    return env_templates.format_reply("", code)


def extract_code(text: str, problem: Problem) -> str:
    """The program in a sampled solution (the whole text when it has no recognisable code)."""
    parsed = parse_reply(text, problem)
    return parsed.code if parsed.has_code and parsed.code is not None else text.strip()


def few_shot_messages(problem: Problem, shots: list[Problem]) -> Messages:
    msgs: Messages = [{"role": "system", "content": GENERATE_SYSTEM}]
    for shot in shots:
        msgs.append({"role": "user", "content": shot.prompt.strip()})
        msgs.append({"role": "assistant", "content": fenced(shot.reference or "")})
    msgs.append({"role": "user", "content": problem.prompt.strip()})
    return msgs


def select_shots(problems: list[Problem], ids: list[str]) -> list[Problem]:
    """Problems whose task id is (or ends in '/') one of `ids`, in the order of `ids`."""
    by_id = {}
    for p in problems:
        by_id[p.task_id] = p
        by_id.setdefault(p.task_id.rsplit("/", 1)[-1], p)
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise ValueError(
            f"few-shot task ids {missing} not found; available e.g. {sorted(by_id)[:10]}"
        )
    shots = [by_id[i] for i in ids]
    if any(not s.reference for s in shots):
        raise ValueError("few-shot problems need reference solutions")
    return shots


@lru_cache(maxsize=1)
def templates_version() -> str:
    """A short hash of every template text used here, recorded in the provenance."""
    src = inspect.getsource(env_templates) + GENERATE_SYSTEM + repr(TEMPLATES)
    return hashlib.sha256(src.encode()).hexdigest()[:12]
