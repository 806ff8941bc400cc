"""The whole run, short: `ray job submit` against a real `ray start` cluster, then resume."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from actorlearner.metrics import read_scalars

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def short_overrides(model_dir: Path, out_dir: Path) -> list[str]:
    """Every stage, minimal sizes: the mechanics, not the learning (see configs/tiny_cpu.yaml)."""
    return [
        f"model.path={model_dir}",
        f"output_dir={out_dir}",
        "name=short",
        "data.train=[synthetic:train]",
        "data.num_synthetic_train=12",
        "data.num_synthetic_test=3",
        "sft.epochs=1",
        "train.iterations=2",
        "train.episodes_per_iteration=4",
        "train.checkpoint_every=1",
        "train.probe_episodes=4",
        "rollout.envs_per_actor=4",
        "rollout.max_new_tokens=24",
        "evaluate.rounds=2",
        "evaluate.max_new_tokens=24",
    ]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A real head node (`ray start --head --block`), stopped by ending its process group."""
    dash = _free_port()
    tmp = tmp_path_factory.mktemp("ray")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen(
        ["ray", "start", "--head", "--block", "--num-cpus=2", f"--port={_free_port()}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--temp-dir={tmp}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )  # fmt: skip
    address = f"http://127.0.0.1:{dash}"
    deadline = time.time() + 120
    while time.time() < deadline:
        ok = subprocess.run(
            ["ray", "job", "list", "--address", address], capture_output=True, env=env
        )
        if ok.returncode == 0:
            break
        time.sleep(2)
    else:
        os.killpg(proc.pid, signal.SIGTERM)
        pytest.fail("ray head did not come up in 120 s")
    yield address, env
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)


@pytest.fixture(scope="module")
def submitted_run(ray_cluster, tiny_model_dir, tmp_path_factory):
    address, env = ray_cluster
    out = tmp_path_factory.mktemp("runs")
    cmd = ["ray", "job", "submit", "--address", address, "--working-dir", str(ROOT), "--",
           "actorlearner", "pipeline", "--config", "configs/tiny_cpu.yaml",
           *short_overrides(tiny_model_dir, out)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return out / "short", result.stdout


def test_job_submit_runs_every_stage(submitted_run):
    run_dir, stdout = submitted_run
    assert "succeeded" in stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert list(summary["results"]) == ["base", "sft", "ppo"]
    for stage in summary["results"].values():
        m = stage["synthetic:test"]
        assert len(m["pass@1"]) == 3 and m["num_tasks"] == 3  # rounds 0..2
    assert summary["collect"]["total"]["correct_refinements"] > 0
    assert summary["train"]["iterations"] == 2 and len(summary["train"]["reward_history"]) == 2
    history = summary["train"]["reward_history"]
    assert summary["train"]["reward_slope"] == pytest.approx(history[1] - history[0])
    solved = summary["train"]["solved_history"]
    assert len(solved) == 2 and all(0 <= s <= 1 for s in solved)
    assert summary["train"]["solved_first_half"] == solved[0]
    # the greedy probe measured the SFT policy and each of the two updates, once each
    assert summary["train"]["probe_versions"] == [0, 1, 2]
    assert all(0 <= s <= 1 for s in summary["train"]["probe_solved_history"])
    assert summary["train"]["probe_paired"]["tasks"] >= 1  # version 0 against version 2
    text = (run_dir / "summary.txt").read_text()
    assert "PPO training reward over 2 iterations" in text
    assert "PPO probe (fixed training starts, greedy)" in text
    assert "points per iteration" in text  # the batch's solved share, beside its reward
    paired = summary["paired"]["synthetic:test"]
    assert list(paired) == ["sft_vs_base", "ppo_vs_sft"] and paired["ppo_vs_sft"]["tasks"] == 3
    assert "Paired per task" in text and "Paired per task" in stdout
    assert (run_dir / "depth.png").stat().st_size > 0
    for model in ("sft", "ppo"):
        assert (run_dir / "models" / model / "config.json").exists()
    assert "pass@1 per refinement round" in stdout  # the printed table


def test_run_writes_tensorboard_series(submitted_run):
    run_dir, _ = submitted_run
    scalars = read_scalars(run_dir / "tb")
    for tag in ("rollout/reward_mean", "loss/policy", "kl", "time/weight_sync_s", "staleness/mean",
                "throughput/rollout_tokens_per_s", "sft/loss/sft"):  # fmt: skip
        assert tag in scalars, sorted(scalars)
    assert len(scalars["rollout/reward_mean"]) == 2
    assert [step for step, _ in scalars["probe/solved"]] == [0, 1, 2]
    summary = json.loads((run_dir / "summary.json").read_text())
    logged = [v for _, v in scalars["rollout/solved"]]
    assert logged == pytest.approx(summary["train"]["solved_history"])
    assert any(t.startswith("reward_terms/") for t in scalars)


def test_rerun_resumes_and_skips_finished_stages(submitted_run, tiny_model_dir):
    run_dir, _ = submitted_run
    before = (run_dir / "summary.json").read_text()
    result = subprocess.run(
        [sys.executable, "-m", "actorlearner.cli", "pipeline", "-c", "configs/tiny_cpu.yaml",
         *short_overrides(tiny_model_dir, run_dir.parent)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "already done" in result.stderr + result.stdout
    assert json.loads((run_dir / "summary.json").read_text()) == json.loads(before)
