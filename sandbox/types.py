"""Data types shared by every sandbox backend.

The trust boundary: a `TestCase.expected` value never enters the sandbox. The
candidate's process only reports the values its code computed; the comparison
against `expected` happens in the trusted parent (see `sandbox.compare`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["passed", "failed", "timeout", "error"]

_UNSET: Any = object()


@dataclass(frozen=True)
class Limits:
    """Per-program resource limits (safe defaults; override per run)."""

    timeout_s: float = 4.0  # wall clock for the whole program + all its tests
    cpu_s: int = 4  # RLIMIT_CPU
    memory_mb: int = 2048  # address-space limit
    output_bytes: int = 1 << 20  # stdout+stderr kept; the rest is discarded
    file_bytes: int = 8 << 20  # RLIMIT_FSIZE inside the scratch dir
    scratch_bytes: int = 64 << 20  # all files of the run together (the run is stopped past it)
    max_procs: int = 16  # processes/threads the candidate may create


@dataclass(frozen=True)
class TestCase:
    """One test: a Python expression evaluated in the candidate's namespace.

    `expr` (e.g. ``"add(1, 2)"``) is run inside the sandbox and its value is
    reported back; `expected` stays outside and is compared by trusted code.
    `expected` unset means "just report the value" (used to compute expected
    outputs from a reference solution, as EvalPlus does).
    """

    __test__ = False  # not a pytest test class, despite the name

    expr: str
    expected: Any = _UNSET
    atol: float = 0.0
    oracle: str = "eq"  # "eq" (with atol for floats) | "truthy" | "find_zero" (HumanEval/32)
    display: str = ""  # how to show the test to a model, e.g. "assert add(1, 2) == 3"

    @property
    def has_expected(self) -> bool:
        return self.expected is not _UNSET


@dataclass
class TestOutcome:
    index: int
    status: Literal["passed", "failed", "error", "timeout", "not_run"]
    expr: str = ""
    actual: str | None = None  # repr of the value the candidate produced
    expected: str | None = None  # repr of the expected value
    value: Any = None  # decoded value (only when a plain JSON-like value came back)
    error_type: str | None = None
    message: str | None = None
    traceback: str | None = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass
class Verdict:
    """The trusted result of running one program against its tests."""

    status: Status
    outcomes: list[TestOutcome] = field(default_factory=list)
    # Program-level failure (syntax error, crash at import, timeout, killed).
    error_type: str | None = None
    message: str | None = None
    traceback: str | None = None
    stdout: str = ""
    stderr: str = ""
    duration_s: float = 0.0
    backend: str = ""
    timeout_s: float | None = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def num_tests(self) -> int:
        return len(self.outcomes)

    @property
    def num_passed(self) -> int:
        return sum(o.passed for o in self.outcomes)

    @property
    def pass_rate(self) -> float:
        return self.num_passed / self.num_tests if self.outcomes else 0.0

    @property
    def first_failure(self) -> TestOutcome | None:
        return next((o for o in self.outcomes if not o.passed), None)
