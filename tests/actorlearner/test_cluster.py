"""Starting or joining Ray as told: private clusters that never meet, a stale address that
fails in seconds, evaluation caches that know their settings, and a cluster without auth."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from actorlearner.pipeline.stages import cached_result

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def eval_args(model_dir: Path, out: Path, name: str, rounds: int = 1) -> list[str]:
    """An evaluate-only pipeline run of two problems: the quickest whole run."""
    return ["pipeline", "-c", "configs/tiny_cpu.yaml", "stages=[evaluate]", f"name={name}",
            f"model.path={model_dir}", f"output_dir={out}", "data.num_synthetic_test=2",
            "evaluate.benchmarks=[synthetic:test]", f"evaluate.rounds={rounds}",
            "evaluate.max_new_tokens=8"]  # fmt: skip


def cli(args: list[str], env: dict[str, str], wait: bool = True):
    cmd = [sys.executable, "-m", "actorlearner.cli", *args]
    kw = dict(cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc = subprocess.Popen(cmd, **kw)  # type: ignore[call-overload]
    return proc if not wait else _finish(proc)


def _finish(proc: subprocess.Popen, timeout: float = 600) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture
def stale_env(tmp_path):
    """A machine where a `ray start` head was killed: ray_current_cluster names a dead address."""
    dead = f"127.0.0.1:{_free_port()}"
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text(dead)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {**env, "RAY_TMPDIR": str(tmp_path)}, dead


def test_stale_address_fails_fast_with_one_line(stale_env, tiny_model_dir, tmp_path):
    env, dead = stale_env
    start = time.time()
    result = cli(eval_args(tiny_model_dir, tmp_path, "auto") + ["ray.address=auto"], env)
    assert result.returncode == 2 and time.time() - start < 60
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: no Ray cluster answers at {dead}") and "ray stop" in last
    result = cli(eval_args(tiny_model_dir, tmp_path, "addr"), {**env, "RAY_ADDRESS": dead})
    assert result.returncode == 2 and f"no Ray cluster answers at {dead}" in result.stderr


def test_two_runs_at_once_each_on_a_private_cluster(stale_env, tiny_model_dir, tmp_path):
    """Started together next to a stale address, both finish on their own clusters (one
    with ray.address=local); a changed evaluation setting recomputes the cached result."""
    env, _ = stale_env
    a = cli(eval_args(tiny_model_dir, tmp_path, "a"), env, wait=False)
    b = cli(eval_args(tiny_model_dir, tmp_path, "b") + ["ray.address=local"], env, wait=False)
    for proc in (a, b):
        done = _finish(proc)
        assert done.returncode == 0, done.stderr[-3000:]
    cache = tmp_path / "a" / "eval" / "base__synthetic_test.json"
    assert json.loads(cache.read_text())["settings"]["rounds"] == 1
    rerun = cli(eval_args(tiny_model_dir, tmp_path, "a", rounds=2), env)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    printed = " ".join((rerun.stdout + rerun.stderr).split())  # the log wraps long lines
    assert "computed with other settings; recomputing" in printed
    metrics = json.loads(cache.read_text())
    assert metrics["settings"]["rounds"] == 2 and len(metrics["pass@1"]) == 3
    text = (tmp_path / "a" / "summary.txt").read_text()
    assert "synthetic:test: 2 problems, 2 rounds, 1 sample(s) per task, greedy" in text
    assert not list(Path("/tmp").glob(f"alray-*{a.pid}*"))  # private temp dirs are removed


def test_cached_result_needs_the_same_settings(tmp_path):
    settings = {"model": "m", "rounds": 2, "num_problems": 5}
    path = tmp_path / "r.json"
    assert cached_result(path, settings, resume=True) is None  # nothing cached yet
    path.write_text(json.dumps({"pass@1": [0.5], "settings": settings}))
    assert cached_result(path, settings, resume=True) == {"pass@1": [0.5], "settings": settings}
    assert cached_result(path, settings, resume=False) is None  # --no-resume recomputes
    assert cached_result(path, {**settings, "rounds": 3}, resume=True) is None
    path.write_text(json.dumps({"pass@1": [0.5]}))  # written before settings were recorded
    assert cached_result(path, settings, resume=True) is None


SDK_SNIPPET = """
import os, sys, time
os.environ.setdefault("RAY_AUTH_MODE", "token")  # send the token, as scripts/submit.sh does
from ray.job_submission import JobSubmissionClient, JobStatus
client = JobSubmissionClient(sys.argv[1])
job = client.submit_job(entrypoint="actorlearner pipeline -c configs/tiny_cpu.yaml --dry-run",
                        runtime_env={"working_dir": "."})
while not client.get_job_status(job).is_terminal():
    time.sleep(1)
print(client.get_job_status(job), client.get_job_logs(job)[-200:])
"""


def run_sdk(dashboard: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", SDK_SNIPPET, dashboard]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_cluster_without_auth_takes_the_same_commands():
    """A head started with auth off: submit.sh and Ray's job SDK (both in token mode when
    a token exists) still work; the server ignores a token it does not check."""
    from tests.actorlearner.test_pipeline import _stop, _wait_nodes, node_ports

    dash = _free_port()
    short_dir = tempfile.mkdtemp(prefix="al-", dir="/tmp")  # Unix socket paths stay short
    off = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    head = subprocess.Popen(
        ["ray", "start", "--block", "--head", "--num-cpus=2", f"--port={_free_port()}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--temp-dir={short_dir}",
         f"--ray-client-server-port={_free_port()}", *node_ports()],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True, env=off,
    )  # fmt: skip
    url = f"http://127.0.0.1:{dash}"
    try:
        _wait_nodes(url, 1)
        env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
        env["RAY_API_SERVER_ADDRESS"] = url
        cmd = ["bash", "scripts/submit.sh", "configs/tiny_cpu.yaml", "--dry-run"]
        for _ in range(10):  # a new head takes jobs once its agent is up ("try again later")
            result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                                    timeout=300)  # fmt: skip
            if "No available agent" not in result.stdout + result.stderr:
                break
            time.sleep(5)
        assert result.returncode == 0 and "succeeded" in result.stdout, result.stdout[-3000:]
        assert "# resource plan" in result.stdout
        sdk = run_sdk(url, env)
        assert sdk.returncode == 0 and "SUCCEEDED" in sdk.stdout, sdk.stderr[-2000:]
    finally:
        _stop(head)
        shutil.rmtree(short_dir, ignore_errors=True)
