"""What a dataset was made from: models, prompts, sampling, seed, software versions."""

from __future__ import annotations

import hashlib
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path

from actorlearner.collect import prompts
from actorlearner.collect.config import CollectConfig

_PACKAGES = (
    "actorlearner",
    "torch",
    "transformers",
    "tokenizers",
    "ray",
    "gymnasium",
    "deepspeed",
    "vllm",
)


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        res = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


def model_fingerprint(path: str) -> str | None:
    """A hash of a local model directory's config and weight-file sizes (cheap, not a full read)."""
    p = Path(path)
    if not p.is_dir():
        return None
    h = hashlib.sha256()
    for f in sorted(p.iterdir()):
        if f.is_file():
            h.update(f.name.encode())
            h.update(f.read_bytes() if f.suffix == ".json" else str(f.stat().st_size).encode())
    return h.hexdigest()[:16]


def build(
    cfg: CollectConfig, labels: dict[str, str | None], counts: dict[str, int], started: float
) -> dict:
    """The provenance record (no secrets: the teacher key is never part of the config)."""
    return {
        "run_id": cfg.run_id(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "models": {
            **labels,
            "policy_fingerprint": model_fingerprint(cfg.policy) if cfg.policy else None,
            "teacher_url": cfg.teacher.base_url
            if cfg.refiner == "teacher" or cfg.sampler == "teacher"
            else None,
        },
        "templates_version": prompts.templates_version(),
        "sampling": {
            "samples_per_problem": cfg.samples_per_problem,
            "sample_temperature": cfg.sample_temperature,
            "few_shot": {"source": cfg.few_shot_source, "ids": list(cfg.few_shot_ids)},
            "refinements_per_wrong": cfg.refinements_per_wrong,
            "refine_temperature": cfg.refine_temperature,
        },
        "seed": cfg.seed,
        "config": cfg.fingerprint(),
        "problems": {s: cfg.limit_for(s) or "all" for s in cfg.problems},
        "versions": package_versions(),
        "git_commit": _git_commit(),
        "records": counts,
    }
