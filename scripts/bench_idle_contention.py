"""What work in Linux's idle scheduling class costs the normal processes beside it.

    python scripts/bench_idle_contention.py [--seconds 20] [--idle 0,1,2,4]

Two normal processes stand in for PPO's learner (busy 95% of the time) and rollout actor
(busy 40%): each runs small matmul steps in 50 ms periods and sleeps the rest. Beside
them run N processes of decoding-like attention in SCHED_IDLE, as evaluation during
training does. Prints each process's steps, its time waiting for a CPU, and the
learner's steps against the run without idle work (a ratio of the same run).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time


def normal(duty: float, seconds: float, out: mp.Queue) -> None:
    import torch

    torch.set_num_threads(1)
    a, w = torch.randn(1024, 256), torch.randn(704, 256, requires_grad=True)

    def waited() -> float:  # /proc/self/schedstat: run ns, wait ns, slices
        return int(open("/proc/self/schedstat").read().split()[1]) / 1e9

    steps, start_wait, end = 0, waited(), time.time() + seconds
    while time.time() < end:
        t = time.perf_counter()
        while time.perf_counter() - t < 0.05 * duty:
            (a @ w.T).relu().sum().backward()
            steps += 1
        time.sleep(0.05 * (1 - duty))
    out.put((duty, steps, waited() - start_wait))


def idle_attention() -> None:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(1)
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    q, k, v = torch.randn(30, 4, 1, 64), torch.randn(30, 4, 800, 64), torch.randn(30, 4, 800, 64)
    while True:
        F.scaled_dot_product_attention(q, k, v)


def trial(n_idle: int, seconds: float) -> dict[float, tuple[int, float]]:
    out: mp.Queue = mp.Queue()
    idle = [mp.Process(target=idle_attention, daemon=True) for _ in range(n_idle)]
    for p in idle:
        p.start()
    busy = [mp.Process(target=normal, args=(d, seconds, out)) for d in (0.95, 0.4)]
    for p in busy:
        p.start()
    for p in busy:
        p.join()
    for p in idle:
        p.kill()
    return {duty: (steps, wait) for duty, steps, wait in (out.get() for _ in busy)}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--idle", default="0,1,2,4", help="numbers of idle-class processes")
    args = ap.parse_args()
    if not hasattr(os, "SCHED_IDLE"):
        raise SystemExit("error: this needs Linux's SCHED_IDLE scheduling class")
    counts = [int(x) for x in args.idle.split(",")]
    if 0 not in counts:
        counts.insert(0, 0)
    rows = {n: trial(n, args.seconds) for n in counts}
    base = rows[0][0.95][0]
    print("idle procs  learner steps  wait s  actor steps  wait s  learner vs none")
    for n, r in rows.items():
        (ls, lw), (as_, aw) = r[0.95], r[0.4]
        print(f"{n:10d}  {ls:13d}  {lw:6.2f}  {as_:11d}  {aw:6.2f}  {ls / base:14.3f}x")


if __name__ == "__main__":
    main()
