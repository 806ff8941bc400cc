"""Score every benchmark's own reference solutions in the sandbox (all tests, plus sets
included) and print how many pass, with the reason for each failure, and how many
truthy tests each keeps (a program that reads such a test can pass it blindly).

    python scripts/check_canonical.py [humaneval mbpp mbpp_sanitized humaneval+ mbpp+]

The first run computes the HumanEval+/MBPP+ expected outputs (minutes; cached after).
"""

from __future__ import annotations

import sys
import time
import warnings

from actorlearner.evaluation import evaluate_samples
from envs.sources import load_problems

SPECS = {
    "humaneval": "humaneval",
    "mbpp": "mbpp",
    "mbpp_sanitized": "mbpp_sanitized",
    "humaneval+": "humaneval+",
    "mbpp+": "mbpp+",
}


def check(name: str) -> bool:
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        problems = load_problems(SPECS[name])
    loaded = time.perf_counter() - start
    samples = [{"task_id": p.task_id, "solution": p.reference} for p in problems]
    start = time.perf_counter()
    results, metrics = evaluate_samples(problems, samples, k=(1,))
    scored = time.perf_counter() - start
    n_base = sum(len(p.tests) for p in problems)
    n_plus = sum(len(p.plus_tests) for p in problems)
    base_ok = sum(r["base"]["passed"] for r in results)
    truthy = sum(t.oracle == "truthy" for p in problems for t in p.tests + p.plus_tests)
    line = f"{name}: base {base_ok}/{len(results)}"
    if n_plus:
        line += f", base+plus {sum(r['passed'] for r in results)}/{len(results)}"
    print(
        f"{line}  ({n_base} base + {n_plus} plus tests, {truthy} truthy; "
        f"load {loaded:.1f} s, score {scored:.1f} s)"
    )
    for w in caught:
        print(f"  note: {w.message}")
    for r in results:
        if not r["passed"]:
            part = r["base"] if not r["base"]["passed"] else r["plus"]
            bad = next((t for t in part["tests"] if t["status"] != "passed"), {})
            print(f"  FAIL {r['task_id']}: {r['status']} {part.get('error', '')} {bad}"[:400])
    return all(r["passed"] for r in results)


def main(names: list[str]) -> int:
    unknown = [n for n in names if n not in SPECS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {list(SPECS)}")
        return 2
    ok = [check(name) for name in names or list(SPECS)]
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
