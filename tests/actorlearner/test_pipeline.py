"""The whole run on a real two-node `ray start` cluster with Ray's default token auth:
`scripts/submit.sh`, actors on both nodes, a node lost mid-training, `ray job stop`,
resubmission that resumes, and a local rerun that skips finished stages."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
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
        "data.num_synthetic_novel=3",
        "sft.epochs=1",
        "sft.cpu_threads=1",  # one rank on one node of two CPUs
        "train.iterations=2",
        "train.episodes_per_iteration=4",
        "train.checkpoint_every=1",
        "train.probe_episodes=4",
        "rollout.num_actors=2",
        "rollout.envs_per_actor=4",
        "rollout.max_new_tokens=24",
        "evaluate.rounds=2",
        "evaluate.max_new_tokens=24",
    ]


def node_ports(taken: tuple[int, ...] = ()) -> list[str]:
    """Every port a node opens, free ones, so this cluster never meets another on the
    machine; the worker port range holds none of them nor any port in `taken`."""
    names = ("node-manager-port", "object-manager-port", "metrics-export-port",
             "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port")  # fmt: skip
    ports = {n: _free_port() for n in names}
    used = set(ports.values()) | set(taken)
    low = _free_port() // 100 * 100
    while any(low <= u <= low + 99 for u in used):
        low = _free_port() // 100 * 100
    return [f"--{n}={v}" for n, v in ports.items()] + [
        f"--min-worker-port={low}", f"--max-worker-port={low + 99}"]  # fmt: skip


@dataclass
class Cluster:
    dashboard: str
    gcs: str
    head: subprocess.Popen
    worker: subprocess.Popen | None
    tmp: Path
    starts: int = 0

    def start_worker(self) -> None:
        """A second node: its own CPUs, temp dir (shared ones lose uploaded files) and a
        custom resource."""
        self.starts += 1  # a fresh temp dir each time: a restarted node is a new node
        args = [f"--address={self.gcs}", "--num-cpus=2", '--resources={"worker_node": 2}',
                f"--temp-dir={self.tmp / f'worker{self.starts}'}", *node_ports()]  # fmt: skip
        # joining by address, `ray start` sends the token only in token mode (as the README says)
        log = self.tmp / f"worker{self.starts}.log"
        self.worker = _ray_start(args, log, {**os.environ, "RAY_AUTH_MODE": "token"})
        _wait_nodes(self.dashboard, 2, timeout_s=240, node=self.worker)

    def stop_worker(self) -> None:
        assert self.worker is not None
        _stop(self.worker)
        self.worker = None


def _ray_start(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`ray start --block` in its own process group (ending the group stops only this
    node), its output in `log`, which `_wait_nodes` shows if the node dies."""
    with log.open("wb") as out:
        proc = subprocess.Popen(["ray", "start", "--block", *args], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, env=env)  # fmt: skip
    proc.log = log  # type: ignore[attr-defined]
    return proc


class NodeDied(RuntimeError):
    """`ray start` exited before its node joined."""


def _tail(node: subprocess.Popen) -> str:
    log = getattr(node, "log", None)
    return log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    except ProcessLookupError:
        pass


def _client(dashboard: str):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(dashboard)


def _wait_nodes(
    dashboard: str, count: int, timeout_s: float = 240, node: subprocess.Popen | None = None
) -> None:
    """Until `count` nodes are alive; fails at once, with its output, if `node` exits."""
    from ray.util.state import list_nodes

    deadline, seen = time.time() + timeout_s, ""
    while time.time() < deadline:
        if node is not None and node.poll() is not None:
            raise NodeDied(f"`ray start` exited with {node.returncode}:\n{_tail(node)}")
        try:
            alive = [n for n in list_nodes(address=dashboard) if n.state == "ALIVE"]
            if len(alive) == count:
                return
            seen = f"{len(alive)} alive"
        except Exception as exc:  # the dashboard is still starting
            seen = repr(exc)[:300]
        time.sleep(2)
    tail = f"\n`ray start` said:\n{_tail(node)}" if node is not None else ""
    pytest.fail(
        f"the cluster did not reach {count} live nodes in {timeout_s} s (last: {seen}){tail}"
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Head (2 CPUs) + worker node (2 CPUs), started as a user does: token auth on."""
    from actorlearner.raycluster import token_available, use_token_if_available

    if not token_available():  # Ray's own first step on a new machine
        subprocess.run(["ray", "get-auth-token", "--generate"], check=True, capture_output=True)
    tmp = tmp_path_factory.mktemp("ray")
    from ray._private.services import get_node_ip_address

    use_token_if_available()  # this process reads job logs through Ray's SDK
    for attempt in (1, 2):  # free ports are picked, then bound: another program may win one
        port, dash, client = _free_port(), _free_port(), _free_port()
        head = _ray_start(["--head", "--num-cpus=2", f"--port={port}", "--dashboard-host=127.0.0.1",
                           f"--dashboard-port={dash}", f"--ray-client-server-port={client}",
                           f"--temp-dir={tmp / f'head{attempt}'}", *node_ports((port, dash, client))],
                          tmp / f"head{attempt}.log")  # fmt: skip
        c = Cluster(f"http://127.0.0.1:{dash}", f"{get_node_ip_address()}:{port}", head, None, tmp)
        try:
            _wait_nodes(c.dashboard, 1, node=head)
            break
        except NodeDied:
            if attempt == 2:
                raise
            print(f"the head did not start, once more with other ports:\n{_tail(head)}")
    try:
        c.start_worker()
        yield c
    finally:
        if c.worker is not None:
            _stop(c.worker)
        _stop(head)


def submit(cluster: Cluster, args: list[str], job_id: str = "", wait: bool = True):
    """scripts/submit.sh as a user runs it: no auth setting in the environment."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    env["RAY_API_SERVER_ADDRESS"] = cluster.dashboard
    extra = ([] if wait else ["--no-wait"]) + ([f"--submission-id={job_id}"] if job_id else [])
    env["RAY_SUBMIT_ARGS"] = " ".join(extra)
    cmd = ["bash", str(ROOT / "scripts" / "submit.sh"), "configs/tiny_cpu.yaml", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)


@pytest.fixture(scope="module")
def submitted_run(cluster, tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    start = time.time()
    result = submit(cluster, short_overrides(tiny_model_dir, out))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    print(f"submitted short run: {time.time() - start:.0f} s")
    return out / "short", result.stdout


def test_job_submit_runs_every_stage(submitted_run):
    run_dir, stdout = submitted_run
    assert "succeeded" in stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert list(summary["results"]) == ["base", "sft", "ppo"]
    for stage in summary["results"].values():
        m = stage["synthetic:test"]
        assert len(m["pass@1"]) == 3 and m["num_tasks"] == 3  # rounds 0..2
        assert m["settings"]["rounds"] == 2 and m["settings"]["num_problems"] == 3
        assert m["workers"] == 3  # 4 CPUs of evaluation workers, one shard per problem
    # base and SFT are final before PPO: they were evaluated while it trained
    idle = {name: r["synthetic:test"]["idle_priority"] for name, r in summary["results"].items()}
    assert idle == {"base": True, "sft": True, "ppo": False}
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
    assert "synthetic:test: 3 problems, 2 rounds, 1 sample(s) per task, greedy" in text
    assert "PPO training reward over 2 iterations" in text
    assert "PPO probe (fixed training starts, greedy)" in text
    assert "points per iteration" in text  # the batch's solved share, beside its reward
    paired = summary["paired"]["synthetic:test"]
    assert list(paired) == ["sft_vs_base", "ppo_vs_sft"] and paired["ppo_vs_sft"]["tasks"] == 3
    assert (run_dir / "depth.png").stat().st_size > 0
    for model in ("sft", "ppo"):
        assert (run_dir / "models" / model / "config.json").exists()
    # every stage's time, the evaluate stage's included (it writes the summary itself)
    timings = summary["timings_s"]
    assert list(timings) == ["collect", "sft", "train", "evaluate"]
    assert timings == json.loads((run_dir / "timings.json").read_text())
    assert all(v > 0 for v in timings.values())
    logged = " ".join(stdout.split())  # log lines wrap at the console's width
    assert f"evaluate {timings['evaluate']:.0f} s (" in logged  # the run's last log line


def test_job_prints_progress_and_table(submitted_run):
    """`ray job submit` (and so `ray job logs -f`) shows what a local run prints."""
    _, stdout = submitted_run
    for line in ("iter 1/2", "iter 2/2", "pass@1 per refinement round", "Paired per task",
                 "PPO training reward over 2 iterations",
                 "ppo on synthetic:test, round 2/2: "):  # fmt: skip
        assert line in stdout, line


def test_actors_ran_on_both_nodes(submitted_run):
    run_dir, _ = submitted_run
    actors = json.loads((run_dir / "summary.json").read_text())["train"]["actors"]
    assert len(actors) == 2 and len({a["node_id"] for a in actors}) == 2, actors
    assert (run_dir / "checkpoints" / "ppo" / "latest").exists()


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


def test_plain_job_submit_and_sdk_with_the_token(cluster):
    """Ray's own CLI and job SDK against the token cluster, as the README shows them."""
    from tests.actorlearner.test_cluster import run_sdk

    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    cmd = ["ray", "job", "submit", "--address", cluster.dashboard, "--working-dir", ".", "--",
           "actorlearner", "pipeline", "-c", "configs/tiny_cpu.yaml", "--dry-run"]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, env={**env, "RAY_AUTH_MODE": "token"},
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0 and "# resource plan" in result.stdout, result.stderr[-2000:]
    sdk = run_sdk(cluster.dashboard, env)
    assert sdk.returncode == 0 and "SUCCEEDED" in sdk.stdout, sdk.stderr[-2000:]


def _logs_until(cluster: Cluster, job_id: str, text: str, timeout_s: float = 300) -> str:
    client = _client(cluster.dashboard)
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        logs = client.get_job_logs(job_id)
        if text in logs:
            return logs
        if client.get_job_status(job_id).is_terminal():
            pytest.fail(f"job ended before printing {text!r}:\n{logs[-3000:]}")
        time.sleep(1)
    pytest.fail(f"job did not print {text!r} in {timeout_s} s")


def _last_iteration(logs: str, total: int) -> int:
    return max(i for i in range(total + 1) if i == 0 or f"iter {i}/{total}" in logs)


def test_node_loss_then_job_stop_then_resume(cluster, tiny_model_dir, tmp_path):
    """PPO keeps going on the actors left when the worker node stops; `ray job stop`
    checkpoints on the way out; the resubmitted command resumes: no update lost or repeated."""
    from ray.job_submission import JobStatus

    args = [f"model.path={tiny_model_dir}", f"output_dir={tmp_path}", "name=resume",
            "stages=[train]", "data.train=[synthetic:train]", "data.num_synthetic_train=12",
            "train.iterations=8", "train.episodes_per_iteration=4", "train.checkpoint_every=100",
            "rollout.num_actors=2", "rollout.envs_per_actor=4", "rollout.max_new_tokens=24"]  # fmt: skip
    assert submit(cluster, args, "resume-1", wait=False).returncode == 0
    logs = _logs_until(cluster, "resume-1", "iter 1/8")
    killed_at = _last_iteration(logs, 8)
    cluster.stop_worker()
    logs = _logs_until(cluster, "resume-1", f"iter {killed_at + 2}/8")
    assert "died" in logs or "missed weights" in logs  # the other actor took over
    client = _client(cluster.dashboard)
    client.stop_job("resume-1")
    deadline = time.time() + 300
    while not client.get_job_status("resume-1").is_terminal() and time.time() < deadline:
        time.sleep(1)
    assert client.get_job_status("resume-1") == JobStatus.STOPPED
    logs = client.get_job_logs("resume-1")
    assert "received SIGTERM" in logs
    done = _last_iteration(logs, 8)
    assert killed_at + 2 <= done < 8
    ckpt = tmp_path / "resume" / "checkpoints" / "ppo"
    assert (ckpt / "latest").exists()  # saved on the way out (checkpoint_every=100)
    state = tmp_path / "resume" / "state.json"  # written when a stage finishes
    assert not state.exists() or "train" not in json.loads(state.read_text())["done"]

    cluster.start_worker()  # the node comes back; the same command resumes
    result = submit(cluster, args, "resume-2")
    assert result.returncode == 0, result.stdout[-4000:]
    assert f"resumed PPO at iteration {done}" in result.stdout
    train = json.loads((tmp_path / "resume" / "state.json").read_text())["done"]["train"]
    assert train["iterations"] == 8 and len(train["reward_history"]) == 8
    assert len({a["node_id"] for a in train["actors"]}) == 2
    steps = [s for s, _ in read_scalars(tmp_path / "resume" / "tb")["rollout/reward_mean"]]
    assert sorted(steps) == list(range(1, 9))  # each update logged once, across both jobs


def test_rerun_resumes_and_skips_finished_stages(submitted_run, tiny_model_dir):
    """A local rerun skips the finished stages and reuses every cached evaluation result."""
    run_dir, _ = submitted_run
    before = json.loads((run_dir / "summary.json").read_text())
    cached = {p: p.stat().st_mtime_ns for p in (run_dir / "eval").glob("*.json")}
    result = subprocess.run(
        [sys.executable, "-m", "actorlearner.cli", "pipeline", "-c", "configs/tiny_cpu.yaml",
         *short_overrides(tiny_model_dir, run_dir.parent), "ray.num_cpus=4"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "already done" in result.stderr + result.stdout
    after = json.loads((run_dir / "summary.json").read_text())
    assert after["results"] == before["results"] and after["paired"] == before["paired"]
    assert len(cached) == 6 and all(p.stat().st_mtime_ns == t for p, t in cached.items())
