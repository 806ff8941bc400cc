"""Execution of candidate programs against a problem's tests, in the sandbox."""

from __future__ import annotations

from envs.problem import Problem
from sandbox.types import Limits, Verdict

INFRA_ERROR = "SandboxError"  # the sandbox itself failed; says nothing about the program


class SandboxFailure(RuntimeError):
    """The sandbox could not run a program: recording it as 'wrong' would poison the data."""


def run_codes(problem: Problem, codes: list[str], limits: Limits) -> list[Verdict]:
    """One verdict per whole-program `code` (the problem's setup code is prepended).

    Jobs the sandbox itself failed on are run once more; if that fails too the unit
    fails (and is redone on resume) rather than counting the program as wrong.
    """
    if not codes:
        return []
    from sandbox import run_batch

    jobs = [(problem.program(code), list(problem.tests)) for code in codes]
    verdicts = run_batch(jobs, limits=limits)
    again = [i for i, v in enumerate(verdicts) if v.error_type == INFRA_ERROR]
    if again:
        for i, v in zip(again, run_batch([jobs[i] for i in again], limits=limits), strict=True):
            verdicts[i] = v
        broken = [v for v in verdicts if v.error_type == INFRA_ERROR]
        if broken:
            raise SandboxFailure(
                f"the sandbox failed on {len(broken)} program(s) of {problem.task_id}: "
                f"{broken[0].message}. Check the sandbox (e.g. `firejail --version`, or set "
                "SANDBOX_BACKEND), then rerun to resume."
            )
    return verdicts
