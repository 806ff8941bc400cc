"""The pool: concurrent callers, self-healing workers, flat memory, nothing left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sandbox import Limits, TestCase

SQUARE = "def sq(x):\n    return x * x\n"


def rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])


def tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return out


def test_many_threads_share_one_pool(pool):
    def check(i: int) -> bool:
        return pool.run(SQUARE, [TestCase(f"sq({i})", i * i if i % 3 else -1)]).passed

    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(check, range(40)))
    assert results == [bool(i % 3) for i in range(40)]


def test_run_batch_keeps_order_and_reports_progress(pool):
    seen = []
    jobs = [(SQUARE, [TestCase(f"sq({i})", i * i)]) for i in range(12)]
    verdicts = pool.run_batch(jobs, on_result=lambda i, v: seen.append(i))
    assert [v.outcomes[0].value for v in verdicts] == [i * i for i in range(12)]
    assert seen == list(range(12))


def test_a_dead_jail_is_replaced(pool):
    before = pool.pids()
    os.killpg(before[0], signal.SIGKILL)
    time.sleep(0.1)
    verdicts = pool.run_batch([(SQUARE, [TestCase("sq(3)", 9)])] * 4)
    assert all(v.passed for v in verdicts)
    assert pool.pids()[0] != before[0]


def test_memory_stays_flat(pool):
    pool.run_batch([(SQUARE, [TestCase("sq(2)", 4)])] * 10)
    jails = [p for pid in pool.pids() for p in tree(pid)]
    before = sum(rss_kb(p) for p in jails) + rss_kb(os.getpid())
    big = "data = list(range(200000))\n" + SQUARE
    verdicts = pool.run_batch([(big, [TestCase("sq(2)", 4), TestCase("len(data)")])] * 100)
    assert all(v.passed for v in verdicts)
    after = sum(rss_kb(p) for p in jails) + rss_kb(os.getpid())
    assert after - before < 8 * 1024, (before, after)  # KiB: the jobs' memory went with them


def test_jails_exit_when_their_owner_dies(tmp_path):
    script = textwrap.dedent(
        """
        import os, sys
        from sandbox import SandboxPool, TestCase
        pool = SandboxPool(workers=2).start()
        pool.run("import time", [TestCase("time.sleep(0.01)")])
        print(*pool.pids(), flush=True)
        os._exit(0)  # no close(): the jails must notice on their own
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    pids = [int(p) for p in out.stdout.split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.1)
    assert not any(Path(f"/proc/{p}").exists() for p in pids)


def test_bad_limits_are_refused_with_the_reason(pool):
    import pytest

    with pytest.raises(ValueError, match="exceeds this pool's ceiling"):
        pool.run(SQUARE, [TestCase("sq(1)", 1)], Limits(memory_mb=1 << 20))
    with pytest.raises(ValueError, match=r"timeout_s=0 \(must be >= 0.01\), max_procs=0"):
        pool.run(SQUARE, [TestCase("sq(1)", 1)], Limits(timeout_s=0, max_procs=0))


def test_a_forked_process_gets_its_own_jails(pool):
    pool.run(SQUARE, [TestCase("sq(2)", 4)])
    parents = pool.pids()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child uses the inherited pool, then exits
        ok = pool.run(SQUARE, [TestCase("sq(5)", 25)]).passed and pool.pids() != parents
        os.write(w, b"1" if ok else b"0")
        pool.close()
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(r, 1) == b"1"
    assert pool.pids() == parents and pool.run(SQUARE, [TestCase("sq(3)", 9)]).passed
