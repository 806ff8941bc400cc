"""Run untrusted Python programs against tests and get trusted verdicts.

    >>> from sandbox import run, TestCase
    >>> run("def add(a, b): return a + b", [TestCase("add(1, 2)", 3)]).status
    'passed'

`run` and `run_batch` use a shared default `SandboxPool` (firejail unless
``SANDBOX_BACKEND``/`backend` says otherwise); create your own pool for other limits
or worker counts, and `sandbox.distributed.ClusterSandbox` from Ray actors.

Trust model. Inside the jail, a trusted harness execs the program and evaluates each
`TestCase.expr` in its namespace; only the *values* come back, encoded from exact
builtin types. Expected values never enter the jail, and pass/fail is decided here
(`sandbox.compare.matches`). The candidate runs in the same process as the harness,
so it can patch the harness or write to its channel, but all it can do that way is
report values, which still have to equal values it cannot see. (A "truthy" test,
where any truthy value passes, is the one kind a forger can satisfy blindly, and so
is any test whose expression tells which value passes, such as ``not (f(x))`` against
``not not (f(x))``: send the same expression to every test and keep the difference
in `expected`.) ``oracle="is"`` compares identity with True, False or None.

Isolation (see `sandbox.jail` and `sandbox.zygote`): one warm jailed zygote per
worker forks each run from a template process that never held another run's data;
the child takes a fresh unprivileged uid, rlimits (CPU, memory, file size,
processes), a seccomp filter (`sandbox.seccomp`) and a fresh scratch dir on a private
tmpfs bounded by `Limits.scratch_bytes`, with no network, no IPC objects, no host
sockets and no view of the project, its data or site-packages. After each run every
process of that uid is killed and its dir removed. Captured output is stdout and
stderr interleaved, in `Verdict.stdout`. `Limits.memory_mb` bounds each process of a
run (a run may start up to `Limits.max_procs` of them).

Whatever a run reports, the verdict is the program's: decoding and comparing never
raise, and leftovers count against it. A verdict with ``error_type="SandboxError"``
means the sandbox itself failed, and says nothing about the program.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Sequence

from sandbox.compare import matches
from sandbox.pool import Job, SandboxPool
from sandbox.types import Limits, TestCase, TestOutcome, Verdict

__all__ = [
    "Limits",
    "SandboxPool",
    "TestCase",
    "TestOutcome",
    "Verdict",
    "default_pool",
    "matches",
    "run",
    "run_batch",
]

_default: SandboxPool | None = None
_default_pid = 0
_default_lock = threading.Lock()


def default_pool(workers: int | None = None) -> SandboxPool:
    """The shared pool (created on first use, recreated in a forked process)."""
    global _default, _default_pid
    with _default_lock:
        if _default is None or _default_pid != os.getpid():
            _default = SandboxPool(workers=workers)
            _default_pid = os.getpid()
            atexit.register(_close_default, _default, _default_pid)
        return _default


def _close_default(pool: SandboxPool, owner: int) -> None:
    if os.getpid() == owner:  # a forked child must not close its parent's jails
        pool.close()


def run(program: str, tests: Sequence[TestCase], limits: Limits | None = None) -> Verdict:
    """Run `program`, then evaluate each test in its namespace; compare outside."""
    return default_pool().run(program, tests, limits or Limits())


def run_batch(
    jobs: Sequence[Job],
    limits: Limits | None = None,
    workers: int | None = None,
    progress: bool = False,
) -> list[Verdict]:
    """`run` for many (program, tests) pairs at once, using every worker."""
    if workers is not None:
        with SandboxPool(workers=workers, limits=limits) as pool:
            return pool.run_batch(jobs, limits, progress=progress)
    return default_pool().run_batch(jobs, limits or Limits(), progress=progress)
