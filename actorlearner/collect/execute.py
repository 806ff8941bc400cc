"""Execution of candidate programs against a problem's tests, in the sandbox."""

from __future__ import annotations

from envs.problem import Problem
from sandbox.types import Limits, Verdict


def run_codes(problem: Problem, codes: list[str], limits: Limits) -> list[Verdict]:
    """One verdict per whole-program `code` (the problem's setup code is prepended)."""
    if not codes:
        return []
    from sandbox import run_batch

    return run_batch(
        [(problem.program(code), list(problem.tests)) for code in codes], limits=limits
    )
