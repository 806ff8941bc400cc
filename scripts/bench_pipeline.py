"""Throughput, async overlap and peak memory of a whole run.

    python scripts/bench_pipeline.py [--config configs/tiny_cpu.yaml] [key=value ...]

1. Runs the pipeline (all stages) while sampling the memory of every process of the
   run (the driver and all its descendants: Ray's GCS, raylet, actors) and prints the
   peak, the stage timings and the throughput figures logged to TensorBoard.
2. Reruns the PPO stage from the SFT model in sync and in async mode (same iterations)
   and prints, for each, iteration time against max(rollout, learn) and against their sum.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path
from typing import Any

import psutil


class MemorySampler(threading.Thread):
    """Peak summed PSS (proportional set size: shared pages split fairly) of a process tree."""

    def __init__(self, interval_s: float = 1.0):
        super().__init__(daemon=True)
        self.interval_s, self.peak, self._halt = interval_s, 0, threading.Event()

    def run(self) -> None:
        me = psutil.Process()
        while not self._halt.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_full_info().pss
                except (psutil.Error, AttributeError):
                    continue
            self.peak = max(self.peak, total)
            self._halt.wait(self.interval_s)

    def stop(self) -> int:
        self._halt.set()
        self.join()
        return self.peak


def mean_scalar(scalars: dict, tag: str) -> float:
    values = [v for _, v in scalars.get(tag, [])]
    return sum(values) / len(values) if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", default="configs/tiny_cpu.yaml")
    ap.add_argument(
        "--mode-iterations",
        type=int,
        default=4,
        help="PPO iterations per mode in part 2 (0 skips part 2)",
    )
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()

    from actorlearner.config import load_config
    from actorlearner.metrics import read_scalars
    from actorlearner.pipeline.run import init_ray, run_pipeline

    cfg = load_config(args.config, [*args.overrides, "name=bench_pipeline"])
    init_ray(cfg)  # a local cluster: its processes are descendants of this one
    sampler = MemorySampler()
    sampler.start()
    start = time.perf_counter()
    run_pipeline(cfg)
    wall = time.perf_counter() - start
    peak = sampler.stop()
    run_dir = cfg.run_dir
    timings = json.loads((run_dir / "timings.json").read_text())
    scalars = read_scalars(run_dir / "tb")
    print(f"\nwhole run: {wall:.0f} s; stages: {timings}")
    print(f"peak memory of the run (PSS, Ray included): {peak / 2**30:.2f} GiB")
    print(f"rollout tokens/s: {mean_scalar(scalars, 'throughput/rollout_tokens_per_s'):.0f}")
    print(f"sandbox s per episode: {mean_scalar(scalars, 'throughput/sandbox_s_per_episode'):.3f}")
    print(f"learner tokens/s (PPO): {mean_scalar(scalars, 'tokens_per_s'):.0f}")
    print(f"weight sync s: {mean_scalar(scalars, 'time/weight_sync_s'):.2f}")

    bench: dict[str, Any] = {"peak_pss_bytes": peak, "wall_s": wall}
    if args.mode_iterations > 0:
        bench["modes"] = compare_modes(args, run_dir)
    Path(run_dir / "bench.json").write_text(json.dumps(bench, indent=2))


def compare_modes(args: argparse.Namespace, run_dir: Path) -> dict:
    """Part 2: the PPO stage again from the same SFT model, once per scheduling mode."""
    from actorlearner.config import load_config
    from actorlearner.pipeline.stages import run_train
    from actorlearner.pipeline.state import RunState

    state = RunState(run_dir)
    rows = {}
    for mode in ("sync", "async"):
        mcfg = load_config(
            args.config,
            [*args.overrides, f"name=bench_pipeline_{mode}", f"train.mode={mode}",
             f"train.iterations={args.mode_iterations}",
             "train.probe_episodes=0"],  # the probe would sit on the sync critical path
        )  # fmt: skip
        mstate = RunState(mcfg.run_dir)
        mstate.data["done"] = {
            k: v for k, v in state.data["done"].items() if k in ("collect", "sft")
        }
        rows[mode] = run_train(mcfg, mstate)
    print("\nmode   iter s  rollout s  learn s  iter/max(rollout,learn)  iter/(rollout+learn)")
    for mode, r in rows.items():
        print(
            f"{mode:6} {r['iter_s_mean']:6.1f}  {r['rollout_s_mean']:9.1f}  {r['learn_s_mean']:7.1f}"
            f"  {r['iter_over_max']:23.2f}  {r['iter_over_sum']:20.2f}"
        )
    print(
        f"async iteration / sync iteration: {rows['async']['iter_s_mean'] / rows['sync']['iter_s_mean']:.2f}"
    )
    return rows


if __name__ == "__main__":
    main()
