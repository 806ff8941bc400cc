"""What evaluating the base and SFT models during PPO saves, and what it costs PPO.

    python scripts/bench_eval_overlap.py --run runs/tiny_cpu [--config CFG] [--pairs 1]

Reruns the PPO and evaluate stages of a finished run (its collect and SFT outputs are
reused, so both variants start from the same SFT model), alternating
`evaluate.during_training=false` and `=true`, each as `actorlearner pipeline` in a
directory of its own. Prints each variant's stage times, the ratio of PPO + evaluation
(on / off), and evaluation's share of a whole run: with the overlap, its cost is the
evaluate stage plus what PPO lost to it (PPO on minus PPO off of the same pair).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path


def variant(run: Path, config: str, out: Path, on: bool, index: int) -> dict[str, float]:
    """One rerun of PPO + evaluate from `run`'s SFT model; its stage timings."""
    name = f"overlap_{'on' if on else 'off'}_{index}"
    run_dir = out / name
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    state = json.loads((run / "state.json").read_text())
    done = {k: v for k, v in state["done"].items() if k in ("collect", "sft")}
    if set(done) != {"collect", "sft"}:
        sys.exit(f"error: {run} has no finished collect and sft stages; run the pipeline first")
    (run_dir / "state.json").write_text(json.dumps({"done": done}))
    cmd = [sys.executable, "-m", "actorlearner.cli", "pipeline", "-c", config,
           f"output_dir={out}", f"name={name}", "stages=[train,evaluate]",
           f"evaluate.during_training={str(on).lower()}"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"error: the {name} run failed:\n{result.stderr[-2000:]}")
    return json.loads((run_dir / "timings.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--run", required=True, help="a finished run directory (runs/tiny_cpu)")
    ap.add_argument("--config", help="its config (default: the run's config.yaml)")
    ap.add_argument("--pairs", type=int, default=1, help="off/on pairs, alternating")
    ap.add_argument("--out", default="runs/bench_eval_overlap")
    args = ap.parse_args()
    run, out = Path(args.run), Path(args.out).resolve()
    if not (run / "config.yaml").is_file() or not (run / "timings.json").is_file():
        sys.exit(f"error: {run} is not a finished run directory (no config.yaml/timings.json)")
    config = args.config or str(run / "config.yaml")
    before = json.loads((run / "timings.json").read_text())
    head = before.get("collect", 0.0) + before.get("sft", 0.0)
    print("variant    PPO s  evaluate s  PPO+eval s  eval cost s  share of run")
    ratios = []
    for i in range(args.pairs):
        off, on = (variant(run, config, out, flag, i) for flag in (False, True))
        for label, t in (("off", off), ("on", on)):
            lost = t["train"] - off["train"] if label == "on" else 0.0
            cost = t["evaluate"] + lost
            total = head + t["train"] + t["evaluate"]
            print(f"{label}_{i:<6} {t['train']:6.1f}  {t['evaluate']:10.1f}  "
                  f"{t['train'] + t['evaluate']:10.1f}  {cost:11.1f}  {cost / total:11.1%}")  # fmt: skip
        ratios.append((on["train"] + on["evaluate"]) / (off["train"] + off["evaluate"]))
    print(f"PPO + evaluation, overlap on / off: {', '.join(f'{r:.2f}x' for r in ratios)}")
    print(f"(collect + SFT of {run}: {head:.1f} s, counted in each run's total)")


if __name__ == "__main__":
    main()
