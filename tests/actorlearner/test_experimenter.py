"""The README's experiment, run exactly as written: a user module named in `imports`
adds a reward term and an env variant, a short PPO run trains with both and logs the
term to TensorBoard, evaluation plays the variant, and a two-value sweep over the term's
weight prints its table."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_blocks() -> dict[str, str]:
    """The code blocks that follow `<!-- experiment: NAME -->` markers in the README."""
    text = (ROOT / "README.md").read_text()
    pattern = r"<!-- experiment: (\S+) -->\n```\w+\n(.*?\n)```\n"
    return {name: body for name, body in re.findall(pattern, text, flags=re.S)}


def scalar_tags(logdir: Path) -> dict[str, int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return {tag: len(acc.Scalars(tag)) for tag in acc.Tags()["scalars"]}


def test_readme_experiment_trains_with_a_user_term_and_env(tmp_path):
    blocks = readme_blocks()
    assert set(blocks) == {"my_experiment.py", "run.sh"}
    for name, body in blocks.items():
        (tmp_path / name).write_text(body)
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    res = subprocess.run(
        ["bash", "-e", "run.sh"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=1200,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    run = tmp_path / "runs" / "experiment"
    tags = scalar_tags(run / "tb")
    assert tags.get("reward_terms/short_explanation") == 1, sorted(tags)  # one iteration
    evaluated = sorted((run / "eval").glob("*.json"))  # base and PPO, in the user's env
    assert len(evaluated) == 2, evaluated
    for path in evaluated:
        assert json.loads(path.read_text())["settings"]["env"][0] == "CodeRefineTerse-v0"
    table = res.stdout[res.stdout.index("sweep results") :]
    assert "train.rewards.1.weight" in table and "train/reward_last" in table
    rows = [line for line in table.splitlines() if re.search(r"│ (0\.5|2\.0)\s+│", line)]
    assert len(rows) == 2, table
    for weight in ("0.5", "2.0"):
        trial = tmp_path / "runs" / "experiment-sweep" / f"rewards.1.weight={weight}"
        assert f"weight: {weight}" in (trial / "config.yaml").read_text()
