"""Execution of candidate programs against a problem's tests, in the sandbox."""

from __future__ import annotations

from envs.problem import Problem
from sandbox.types import Limits, Verdict


def run_codes(problem: Problem, codes: list[str], limits: Limits) -> list[Verdict]:
    """One verdict per whole-program `code` (the problem's setup code is prepended)."""
    if not codes:
        return []
    import sandbox

    programs = [problem.program(code) for code in codes]
    return sandbox.run_batch(programs, [problem.tests] * len(programs), limits=limits)
