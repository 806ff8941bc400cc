"""Wall time of the evaluate stage, old code against new, in one run on the same models.

    python scripts/bench_eval.py [--baseline REV] [--candidate REV] [--run-dir runs/tiny_cpu]

Exports both revisions of the repository (`git archive`, so edits in the working tree
do not leak in) and times each one's `evaluate_jobs` on the config's evaluation
settings and benchmarks for the same models (default: the base model and the run's
models/sft and models/ppo), each on its own private local Ray cluster of --num-cpus
CPUs, one after the other. Prints both times, the new/old ratio, and whether every
(model, benchmark) has the same per-task outcomes and pass@1 by round in both.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs inside the exported tree: evaluate every (model, benchmark), write metrics + time.
WORKER = r"""
import json, sys, time
from actorlearner.config import load_config
from actorlearner.pipeline.cluster_eval import DepthSettings, EvalJob, WorkerShape, evaluate_jobs
from actorlearner.pipeline.run import resolve_model_path, worker_env
from actorlearner.pipeline.stages import eval_env_kwargs, load_problem_set
from actorlearner.raycluster import RayRun
import actorlearner

args = json.loads(sys.argv[1])
cfg = load_config(args["config"])
ev = cfg.evaluate
problems = {b: load_problem_set(cfg, b) for b in ev.benchmarks}
if args["max_problems"]:
    problems = {b: p[: args["max_problems"]] for b, p in problems.items()}
jobs = [EvalJob(b, resolve_model_path(m), p) for m in args["models"] for b, p in problems.items()]
settings = DepthSettings(ev.rounds, ev.samples_per_task, ev.temperature, ev.max_new_tokens,
                         cfg.seed, cfg.env.id, eval_env_kwargs(cfg))
shape = WorkerShape(cfg.rollout.num_cpus_per_actor, cfg.rollout.num_gpus_per_actor)
env = worker_env()
env.setdefault("env_vars", {})["PYTHONPATH"] = args["tree"]
with RayRun("local", num_cpus=args["num_cpus"], runtime_env=env):
    start = time.perf_counter()
    results = evaluate_jobs(jobs, settings, "hf", shape)
    seconds = time.perf_counter() - start
out = {"seconds": seconds, "code": actorlearner.__file__,
       "results": {f"{m}|{b}": r for (m, b), r in results.items()}}
open(args["out"], "w").write(json.dumps(out))
"""


def export(rev: str, into: Path) -> Path:
    """The files of `rev` under `into` (plus the shipped base model, kept out of git)."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def run_side(tree: Path, args: argparse.Namespace, models: list[str], out: Path) -> dict:
    spec = {
        "config": str(ROOT / args.config),
        "models": models,
        "max_problems": args.max_problems,
        "num_cpus": args.num_cpus,
        "tree": str(tree),
        "out": str(out),
    }
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(tree)
    subprocess.run([sys.executable, "-c", WORKER, json.dumps(spec)], cwd=tree, env=env, check=True)
    return json.loads(out.read_text())


def same_outcomes(old: dict, new: dict) -> list[str]:
    """(model, benchmark)s whose per-task outcomes or pass@1 by round differ."""
    keys = sorted(set(old) | set(new))
    return [
        k
        for k in keys
        if k not in old
        or k not in new
        or old[k]["solved_at"] != new[k]["solved_at"]
        or old[k]["pass@1"] != new[k]["pass@1"]
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--baseline", default="cd3ef1b", help="the old code (a git revision)")
    ap.add_argument("--candidate", default="HEAD", help="the new code (a git revision)")
    ap.add_argument("--config", default="configs/tiny_cpu.yaml")
    ap.add_argument("--run-dir", default="runs/tiny_cpu", help="a run with models/sft, models/ppo")
    ap.add_argument("--models", nargs="*", help="model dirs or `base` (default: base + the run's)")
    ap.add_argument("--max-problems", type=int, default=0, help="per benchmark; 0 = all")
    ap.add_argument("--num-cpus", type=int, default=2)
    args = ap.parse_args()
    run_models = [ROOT / args.run_dir / "models" / m for m in ("sft", "ppo")]
    models = args.models or ["base"] + [str(m) for m in run_models if (m / "config.json").exists()]
    # one copy of each model for both sides: `base` is this checkout's shipped model
    models = [
        str(ROOT / "actorlearner/assets/base_model") if m == "base" else str(Path(m).resolve())
        for m in models
    ]
    with tempfile.TemporaryDirectory(prefix="bench_eval_") as tmp:
        sides = {}
        for side, rev in (("old", args.baseline), ("new", args.candidate)):
            tree = export(rev, Path(tmp) / side)
            t = time.perf_counter()
            sides[side] = run_side(tree, args, models, Path(tmp) / f"{side}.json")
            print(f"{side} ({rev}): evaluate_jobs {sides[side]['seconds']:.1f} s "
                  f"(process {time.perf_counter() - t:.1f} s, code {sides[side]['code']})", flush=True)  # fmt: skip
    old, new = sides["old"], sides["new"]
    differ = same_outcomes(old["results"], new["results"])
    print(f"models: {', '.join(Path(m).name for m in models)}; "
          f"{len(new['results'])} (model, benchmark) pairs")  # fmt: skip
    print(f"new/old time: {new['seconds']:.1f} / {old['seconds']:.1f} s = "
          f"{new['seconds'] / old['seconds']:.2f}x")  # fmt: skip
    print("identical per-task outcomes and pass@1 by round:", "yes" if not differ else "NO")
    for key in sorted(new["results"]):
        print(f"  {Path(key.split('|')[0]).name} {key.split('|')[1]}: slowest worker "
              f"{old['results'][key]['eval_s']} s old, {new['results'][key]['eval_s']} s new")  # fmt: skip
    for key in differ:
        print(f"  differs: {key}: old {old['results'].get(key, {}).get('pass@1')} "
              f"new {new['results'].get(key, {}).get('pass@1')}")  # fmt: skip
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
