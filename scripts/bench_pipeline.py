"""Throughput, async overlap, staleness and peak memory of a whole run.

    python scripts/bench_pipeline.py [--config configs/tiny_cpu.yaml] [key=value ...]
    python scripts/bench_pipeline.py stages=[collect,sft] --table-iterations 6

1. Runs the pipeline (the stages the config names) while sampling the memory of every
   process of the run (the driver and all its descendants: Ray's GCS, raylet, actors)
   and prints the peak, the stage timings and the throughput figures logged.
2. Reruns the PPO stage from the SFT model in sync mode, async mode, and async mode with
   weights taken between turns (same iterations, greedy probe on) and prints iteration
   times, the probe's reward from the first to the last version, and their ratios.
3. With --table-iterations: the PPO stage for every staleness bound and off-policy
   correction asked for (staleness 0 is sync mode), each evaluated on held-out problems;
   prints the table.
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
    ap.add_argument(
        "--table-iterations", type=int, default=0, help="PPO iterations per table row (0: none)"
    )
    ap.add_argument(
        "--table-rows",
        default="0:none,1:none,1:none:turns,1:decoupled,2:none,2:decoupled,4:none,4:decoupled",
        help="rows as staleness:correction[:turns]; staleness 0 = sync mode",
    )
    ap.add_argument("--table-problems", type=int, default=60, help="held-out problems per row")
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
    if args.table_iterations > 0:
        bench["staleness_table"] = staleness_table(args, run_dir)
    Path(run_dir / "bench.json").write_text(json.dumps(bench, indent=2))


def fresh_variant(args: argparse.Namespace, run_dir: Path, name: str, overrides: list[str]):
    """A config and a state for a PPO rerun from this run's SFT model, in an empty directory."""
    import shutil

    from actorlearner.config import load_config
    from actorlearner.pipeline.state import RunState

    cfg = load_config(args.config, [*args.overrides, f"name=bench_pipeline_{name}", *overrides])
    shutil.rmtree(cfg.run_dir, ignore_errors=True)  # never resume an older variant
    state = RunState(cfg.run_dir)
    done = RunState(run_dir).data["done"]
    state.data["done"] = {k: v for k, v in done.items() if k in ("collect", "sft")}
    return cfg, state


def run_variant(args: argparse.Namespace, run_dir: Path, name: str, overrides: list[str]) -> dict:
    """The PPO stage once more; its summary plus means of the logged staleness and rates."""
    from actorlearner.metrics import read_scalars
    from actorlearner.pipeline.stages import run_train

    cfg, state = fresh_variant(args, run_dir, name, overrides)
    row = run_train(cfg, state)
    scalars = read_scalars(cfg.run_dir / "tb")
    for key in (
        "staleness/token_mean",
        "throughput/rollout_tokens_per_s",
        "rollout/mixed_version_episodes",
    ):
        row[key] = mean_scalar(scalars, key)
    row["staleness/max"] = max((v for _, v in scalars.get("staleness/max", [])), default=0.0)
    row["cfg"] = cfg
    return row


def probe_change(row: dict) -> tuple[float, float]:
    history = row.get("probe_reward_history") or [float("nan")]
    return history[0], history[-1]


def compare_modes(args: argparse.Namespace, run_dir: Path) -> dict:
    """Part 2: the PPO stage again from the same SFT model, once per scheduling mode."""
    variants = {
        "sync": ["train.mode=sync"],
        "async": ["train.mode=async"],
        "async+turns": ["train.mode=async", "rollout.weights_between_turns=true"],
    }
    rows = {
        name: run_variant(args, run_dir, name, [*o, f"train.iterations={args.mode_iterations}"])
        for name, o in variants.items()
    }
    print(
        "\nmode         iter s  rollout s  learn s  token staleness  mixed-version episodes  "
        "probe reward first -> last"
    )
    for name, r in rows.items():
        first, last = probe_change(r)
        print(
            f"{name:12} {r['iter_s_mean']:6.1f}  {r['rollout_s_mean']:9.1f}  "
            f"{r['learn_s_mean']:7.1f}  {r['staleness/token_mean']:15.2f}  "
            f"{r['rollout/mixed_version_episodes']:22.2f}  {first:+.2f} -> {last:+.2f}"
        )
    it = {name: r["iter_s_mean"] for name, r in rows.items()}
    tok = {name: r["throughput/rollout_tokens_per_s"] for name, r in rows.items()}
    gain = {name: probe_change(r)[1] - probe_change(r)[0] for name, r in rows.items()}
    print(f"async iteration / sync iteration: {it['async'] / it['sync']:.2f}")
    print(
        f"async+turns / async: iteration {it['async+turns'] / it['async']:.2f}x, rollout "
        f"tokens/s {tok['async+turns'] / tok['async']:.2f}x"
    )
    print(f"async+turns iteration / sync iteration: {it['async+turns'] / it['sync']:.2f}")
    print(f"probe reward gain, async / sync: {gain['async']:+.2f} / {gain['sync']:+.2f}")
    print(
        f"probe reward gain, async+turns / async: {gain['async+turns']:+.2f} / {gain['async']:+.2f}"
    )
    return {name: {k: v for k, v in r.items() if k != "cfg"} for name, r in rows.items()}


def held_out(cfg, model: str, max_problems: int) -> dict:
    """pass@1 by refinement round of one model on the config's first evaluation benchmark."""
    from actorlearner.pipeline.cluster_eval import DepthSettings, EvalJob, evaluate_jobs
    from actorlearner.pipeline.stages import eval_env_kwargs, load_problem_set

    ev = cfg.evaluate
    bench = ev.benchmarks[0]
    problems = load_problem_set(cfg, bench)[:max_problems]
    depth = DepthSettings(
        ev.rounds, 1, 0.0, ev.max_new_tokens, cfg.seed, cfg.env.id, eval_env_kwargs(cfg)
    )
    results = evaluate_jobs([EvalJob(bench, model, problems)], depth)
    (metrics,) = results.values()
    return {"benchmark": bench, "problems": len(problems), "pass@1": metrics["pass@1"]}


def rounds_text(pass_at_1) -> str:
    values = list(pass_at_1.values()) if isinstance(pass_at_1, dict) else list(pass_at_1)
    return " / ".join(f"{100 * v:.1f}%" for v in values[1:])  # round 0 is the given bug


def row_overrides(spec: str, iterations: int) -> list[str]:
    """ "k:correction[:turns]" -> overrides; staleness 0 is sync mode."""
    k, corr, *rest = spec.split(":")
    mode = "sync" if int(k) == 0 else "async"
    out = [f"train.mode={mode}", f"train.max_staleness={k}", f"train.off_policy={corr}",
           f"train.iterations={iterations}"]  # fmt: skip
    return out + (["rollout.weights_between_turns=true"] if rest == ["turns"] else [])


def staleness_table(args: argparse.Namespace, run_dir: Path) -> dict:
    """Part 3: PPO for every row spec, each with its greedy probe and a held-out evaluation."""
    from actorlearner.pipeline.state import RunState

    sft_model = RunState(run_dir).output("sft")["model"]
    rows: dict[str, dict] = {}
    for spec in args.table_rows.split(","):
        name = spec.replace(":", "_")
        row = run_variant(args, run_dir, name, row_overrides(spec, args.table_iterations))
        row["held_out"] = held_out(row["cfg"], row["model"], args.table_problems)
        cfg = row.pop("cfg")
        rows[spec] = row
        print(f"{spec}: {row['held_out']}", flush=True)
    sft = held_out(cfg, sft_model, args.table_problems)
    print(f"\nheld-out: {sft['benchmark']}, first {sft['problems']} problems, greedy pass@1 "
          f"after refinement rounds 1..; SFT model: {rounds_text(sft['pass@1'])}")  # fmt: skip
    print("row (staleness:correction[:turns])  max staleness  token staleness  "
          "probe reward first -> last  held-out pass@1  iter s")  # fmt: skip
    for spec, r in rows.items():
        first, last = probe_change(r)
        print(
            f"{spec:34}  {r['staleness/max']:13.0f}  {r['staleness/token_mean']:15.2f}  "
            f"{first:+13.2f} -> {last:+.2f}  {rounds_text(r['held_out']['pass@1']):>15}  "
            f"{r['iter_s_mean']:6.1f}"
        )
    print_ratios(rows)
    return {"sft": sft, "rows": rows}


def print_ratios(rows: dict[str, dict]) -> None:
    """Async vs sync, and weights between turns vs whole episodes, from the same run."""
    pairs = (("1:none", "0:none", "async / sync"), ("1:none:turns", "1:none", "turns / whole"))
    for a, b, label in pairs:
        if a in rows and b in rows:
            ra, rb = rows[a], rows[b]
            ga, gb = (probe_change(r)[1] - probe_change(r)[0] for r in (ra, rb))
            print(
                f"{label}: iteration {ra['iter_s_mean'] / rb['iter_s_mean']:.2f}x, rollout "
                f"tokens/s {ra['throughput/rollout_tokens_per_s'] / rb['throughput/rollout_tokens_per_s']:.2f}x, "
                f"probe reward gain {ga:+.2f} vs {gb:+.2f}"
            )


if __name__ == "__main__":
    main()
