"""Data collection: the whole pipeline on real MBPP and SyntheticBugs problems with the tiny
model as sampler, a real scripted OpenAI-compatible server as teacher, real Ray and the real
sandbox; plus crash-safety of the store and a kill-and-resume run of the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from actorlearner.collect.config import CollectConfig
from actorlearner.collect.dedup import normalize_code, unique
from actorlearner.collect.store import UnitStore
from actorlearner.collect.summary import summarize
from actorlearner.collect.testing_server import launch
from actorlearner.teacher import TeacherConfig

KEY_ENV = "AL_TEST_COLLECT_KEY"
KEY = "sk-collect-secret-93b1d0"
MBPP_N = 3
OUTPUTS = ("sft.jsonl", "failures.jsonl", "pool.jsonl", "references.jsonl", "correct.jsonl")


# ----------------------------------------------------------------------------- helpers
def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _mbpp(n: int = MBPP_N):
    from envs.sources import load_problems

    return load_problems("mbpp:train")[:n]


def _correct_reply(problem) -> str:
    return (
        "The function does not compute the requested result; it must follow the "
        f"task statement.\n```python\n{problem.reference}\n```"
    )


def _wrong_code(problem) -> str:
    return f"def {problem.entry_point}(*args):\n    return None\n"


def _script(problems) -> dict:
    """Per problem: replies to the refine prompt (correct fix, wrong fix, no code) and to the
    few-shot sampling prompt (correct, wrong, the same wrong one reformatted)."""
    rules = []
    for p in problems:
        head = p.prompt.strip().splitlines()[0]
        wrong = _wrong_code(p)
        rules.append(
            {
                "match": [head, "Here is a wrong solution"],
                "replies": [
                    _correct_reply(p),
                    f"It should return nothing.\n```python\n{wrong}```",
                    "I am not sure what is wrong here.",
                ],
            }
        )
        rules.append(
            {
                "match": head,
                "replies": [
                    f"```python\n{p.reference}\n```",
                    f"```python\n{wrong}```",
                    f"```python\n{wrong.replace('    ', '  ')}\n\n# same program\n```",
                ],
            }
        )
    return {"rules": rules, "default": ["no idea"]}


def _run_sandbox(problem, code: str):
    from actorlearner.collect.execute import run_codes
    from sandbox.types import Limits

    return run_codes(problem, [code], Limits(timeout_s=4.0))[0]


def _check_verified(out: Path, problems_by_id: dict) -> tuple[int, int]:
    """Every kept refinement passes in the sandbox; every failure really fails."""
    sft, failures = _read(out / "sft.jsonl"), _read(out / "failures.jsonl")
    for rec in sft:
        assert _run_sandbox(problems_by_id[rec["task_id"]], rec["code"]).passed, rec["task_id"]
    for rec in failures:
        if rec["code"] is not None:
            assert not _run_sandbox(problems_by_id[rec["task_id"]], rec["code"]).passed
        else:
            assert rec["status"] == "no_code"
    return len(sft), len(failures)


def _no_key_anywhere(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), f"API key leaked into {path}"


@pytest.fixture
def teacher_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)


@pytest.fixture(scope="module")
def ray_local():
    """A cluster started before any test sets the teacher key: workers get it from the driver."""
    import ray

    from actorlearner.collect.runner import init_ray

    init_ray("local", num_cpus=2)
    yield
    ray.shutdown()


# ------------------------------------------------------------------------- small parts
def test_dedup_ignores_formatting_and_comments():
    a = "def f(x):\n    return x+1\n"
    b = "def f(x):  # add one\n\n  return (x + 1)\n"
    c = "def f(x):\n    return x+2\n"
    assert normalize_code(a) == normalize_code(b) != normalize_code(c)
    broken = "def f(x)\n   return    x"
    assert normalize_code(broken) == normalize_code("def f(x)\n return x\n\n")
    assert unique([a, c, b, a]) == [(a, 3), (c, 1)]


def test_store_drops_torn_line_and_never_duplicates(tmp_path):
    path = tmp_path / "units.jsonl"
    store = UnitStore(path)
    store.append({"unit_id": "a", "v": 1})
    store.append({"unit_id": "a", "v": 2})  # already done: ignored
    store.close()
    with open(path, "a") as fh:
        fh.write('{"unit_id": "b", "v"')  # a write cut short by a kill
    store = UnitStore(path)
    assert list(store.units) == ["a"] and store.units["a"]["v"] == 1
    store.append({"unit_id": "b", "v": 3})
    store.close()
    assert [json.loads(x)["unit_id"] for x in path.read_text().splitlines()] == ["a", "b"]


def test_summary_counts_table_one_columns():
    unit = {
        "spec": "s",
        "drawn": 5,
        "solutions": [
            {"passed": True},
            {"passed": False, "attempts": [{"passed": True}, {"passed": False}]},
            {"passed": False, "attempts": [{"passed": False}]},
        ],
    }
    total = summarize([unit])["total"]
    assert (total["unique"], total["correct"], total["wrong"]) == (3, 1, 2)
    assert (total["attempts"], total["correct_refinements"], total["refined"]) == (3, 1, 1)
    assert total["refinement_rate"] == 0.5


def test_bad_config_names_the_fix():
    with pytest.raises(ValueError, match="--policy"):
        CollectConfig(sampler="policy", refiner="reference").validate()
    with pytest.raises(ValueError, match="refiner"):
        CollectConfig(refiner="gpt", policy="x").validate()


def test_rerun_with_other_settings_is_refused(tmp_path):
    from actorlearner.collect.runner import _check_out_dir

    cfg = CollectConfig(out=str(tmp_path), refiner="reference", samples_per_problem=0)
    _check_out_dir(tmp_path, cfg)
    _check_out_dir(tmp_path, cfg)  # same settings: fine
    cfg.max_problems = 50  # growing the collection to more problems is fine
    _check_out_dir(tmp_path, cfg)
    cfg.refinements_per_wrong = 3
    with pytest.raises(ValueError, match="refinements_per_wrong"):
        _check_out_dir(tmp_path, cfg)


def test_collection_grows_without_redoing_units(tmp_path):
    from actorlearner.collect.runner import run_collect

    def cfg(n: int) -> CollectConfig:
        return CollectConfig(
            problems=["synthetic:train"],
            source_options={"synthetic:train": {"n": 4}},
            max_problems=n,
            out=str(tmp_path),
            samples_per_problem=0,
            refiner="reference",
            num_workers=0,
        )

    assert run_collect(cfg(2), show_progress=False)["total"]["problems"] == 2
    first = (tmp_path / "units.jsonl").read_text()
    assert run_collect(cfg(3), show_progress=False)["total"]["problems"] == 3
    grown = (tmp_path / "units.jsonl").read_text()
    assert grown.startswith(first) and len(grown.splitlines()) == 3
    assert len(_read(tmp_path / "sft.jsonl")) == 3  # one verified reference per buggy program


# ---------------------------------------------------------------------- whole pipeline
def test_pipeline_mbpp_tiny_sampler_http_teacher(tmp_path, tiny_model_dir, teacher_key, ray_local):
    from actorlearner.collect.runner import run_collect

    problems = _mbpp()
    server = launch(_script(problems), tmp_path / "server", api_key_env=KEY_ENV)
    out = tmp_path / "out"
    cfg = CollectConfig(
        problems=["mbpp:train"],
        out=str(out),
        max_problems=MBPP_N,
        sampler="policy",
        policy=str(tiny_model_dir),
        samples_per_problem=3,
        sample_max_tokens=24,
        refiner="teacher",
        refinements_per_wrong=3,
        teacher=TeacherConfig(base_url=server.url, model="scripted", api_key_env=KEY_ENV),
        num_workers=2,
    )
    try:
        summary = run_collect(cfg, show_progress=False)
    finally:
        server.stop()

    total = summary["total"]
    # A random tiny model writes no correct program; each unique wrong one gets exactly one
    # correct fix (the scripted reference), one wrong fix and one reply without code.
    assert total["problems"] == MBPP_N and total["drawn"] == 3 * MBPP_N
    assert total["correct"] == 0 and total["wrong"] == total["unique"] >= MBPP_N
    assert total["correct_refinements"] == total["wrong"] == total["refined"]
    assert total["attempts"] == 3 * total["wrong"] and total["refinement_rate"] == 1.0

    n_sft, n_fail = _check_verified(out, {p.task_id: p for p in problems})
    assert n_sft == total["wrong"] and n_fail == 2 * total["wrong"]
    statuses = sorted({r["status"] for r in _read(out / "failures.jsonl")})
    assert "no_code" in statuses and len(statuses) >= 2

    sft = _read(out / "sft.jsonl")
    for rec in sft:
        roles = [m["role"] for m in rec["messages"]]
        assert roles == ["system", "user", "assistant"]
        assert rec["wrong_code"] in rec["messages"][1]["content"]
        assert rec["messages"][2]["content"].startswith(rec["explanation"])
        assert rec["provenance"]["model"] == "teacher:scripted"
    pool = _read(out / "pool.jsonl")
    assert len(pool) == total["wrong"]
    assert set(pool[0]) >= {"task_id", "source", "wrong_code", "feedback", "references"}
    assert all(len(r["references"]) == 1 and r["source"] == "mbpp:train" for r in pool)

    prov = json.loads((out / "provenance.json").read_text())
    assert (
        prov["models"]["sampler"].startswith("policy:")
        and prov["models"]["refiner"] == "teacher:scripted"
    )
    assert prov["sampling"]["refinements_per_wrong"] == 3 and prov["versions"]["ray"]
    assert json.loads((out / "summary.json").read_text())["total"] == total
    _no_key_anywhere(out)
    import ray

    _no_key_anywhere(Path(ray._private.worker._global_node.get_session_dir_path()) / "logs")


def test_sft_prompt_is_what_the_env_shows(tmp_path):
    """The user turn of an SFT record equals the env's first observation for that wrong code."""
    import gymnasium as gym

    import envs  # noqa: F401  (registers CodeRefine-v0)
    from actorlearner.collect.runner import run_collect

    cfg = CollectConfig(
        problems=["synthetic:train"],
        source_options={"synthetic:train": {"n": 2}},
        out=str(tmp_path / "out"),
        samples_per_problem=0,
        refiner="reference",
        num_workers=0,
    )
    run_collect(cfg, show_progress=False)
    rec = _read(tmp_path / "out" / "sft.jsonl")[0]
    env = gym.make("CodeRefine-v0", problems="synthetic:train", max_turns=1)
    obs, info = env.reset(
        seed=0, options={"task_id": rec["task_id"], "initial_code": rec["wrong_code"]}
    )
    assert obs == rec["messages"][1]["content"]
    assert info["system"] == rec["messages"][0]["content"]
    env.close()


def test_pipeline_synthetic_references_and_self_bootstrap(tmp_path, tiny_model_dir, ray_local):
    from actorlearner.collect.runner import run_collect
    from envs.sources import load_problems

    problems = load_problems("synthetic:train", n=4)
    out = tmp_path / "out"
    cfg = CollectConfig(
        problems=["synthetic:train"],
        source_options={"synthetic:train": {"n": 4}},
        out=str(out),
        samples_per_problem=0,  # the buggy program ships with the problem
        refiner="policy",  # self-bootstrap with the (random) tiny policy
        policy=str(tiny_model_dir),
        refinements_per_wrong=2,
        refine_max_tokens=24,
        num_workers=1,
    )
    total = run_collect(cfg, show_progress=False)["total"]
    assert total["problems"] == total["unique"] == total["wrong"] == 4 and total["drawn"] == 4
    # the shipped reference fix counts as a verified reply for every buggy program
    assert total["refined"] == 4 and total["correct_refinements"] >= 4
    n_sft, n_fail = _check_verified(out, {p.task_id: p for p in problems})
    assert n_sft == total["correct_refinements"] and n_fail == total["attempts"] - n_sft
    sft = _read(out / "sft.jsonl")
    assert {r["provenance"]["model"] for r in sft} >= {"reference"}
    for rec in sft:
        p = next(p for p in problems if p.task_id == rec["task_id"])
        assert rec["wrong_code"] == p.metadata["initial_code"]
    pool = _read(out / "pool.jsonl")
    assert len(pool) == 4 and all(r["references"] for r in pool)


# ----------------------------------------------------------------------- kill and resume
def _collect_cmd(out: Path, url: str, workers: int = 1) -> list[str]:
    return [
        sys.executable, "-m", "actorlearner.cli", "collect",
        "--problems", "mbpp:train", "--max-problems", "6", "--out", str(out),
        "--sampler", "teacher", "--samples", "4", "--refiner", "teacher", "--refinements", "3",
        "--teacher-url", url, "--teacher-model", "scripted", "--teacher-key-env", KEY_ENV,
        "--workers", str(workers), "--units-per-worker", "2", "--no-progress", "ray.num_cpus=2", "ray.address=local",
    ]  # fmt: skip


def _reap_session(sid: int, wait_s: float = 30.0) -> None:
    """Ray workers of the killed run exit on their own once their raylet is gone; make sure."""
    deadline = time.monotonic() + wait_s
    while True:
        ps = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True).stdout
        left = [int(p) for p, s in (line.split() for line in ps.splitlines()) if int(s) == sid]
        if not left:
            return
        if time.monotonic() > deadline:
            for pid in left:
                os.kill(pid, signal.SIGKILL)
            return
        time.sleep(0.5)


def _units(out: Path) -> int:
    path = out / "units.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.slow
def test_kill_and_resume_matches_uninterrupted_run(tmp_path, teacher_key):
    """Kill a Ray run mid-way and rerun it: the same datasets as an uninterrupted run."""
    problems = _mbpp(6)
    server = launch(_script(problems), tmp_path / "server", api_key_env=KEY_ENV, delay_s=0.4)
    env = {**os.environ, "RAY_DEDUP_LOGS": "0"}
    try:
        full = tmp_path / "full"
        subprocess.run(_collect_cmd(full, server.url, workers=0), check=True, env=env, timeout=300)

        part = tmp_path / "part"
        proc = subprocess.Popen(_collect_cmd(part, server.url), env=env, start_new_session=True)
        deadline = time.monotonic() + 240
        while _units(part) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and every process it started
        proc.wait()
        _reap_session(proc.pid)
        killed_at = _units(part)
        assert 2 <= killed_at < 6 and not (part / "summary.json").exists()

        # resume in-process: the datasets do not depend on how the work was spread
        subprocess.run(_collect_cmd(part, server.url, workers=0), check=True, env=env, timeout=300)
    finally:
        server.stop()

    ids = [json.loads(x)["unit_id"] for x in (part / "units.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 6
    assert json.loads((part / "summary.json").read_text()) == json.loads(
        (full / "summary.json").read_text()
    )
    for name in OUTPUTS:
        assert _read(part / name) == _read(full / name), name
    total = json.loads((full / "summary.json").read_text())["total"]
    # scripted sampler: the reference (correct) and one wrong program written two ways
    assert (total["drawn"], total["unique"], total["correct"], total["wrong"]) == (24, 12, 6, 6)
    _check_verified(full, {p.task_id: p for p in problems})
    _no_key_anywhere(tmp_path / "full")
    _no_key_anywhere(tmp_path / "part")


def test_from_run_config_maps_the_tiny_recipe():
    from actorlearner.collect.config import from_run_config
    from actorlearner.config import load_config

    run = load_config("configs/tiny_cpu.yaml")
    cfg = from_run_config(run, "out", "policy-dir")
    assert cfg.problems == run.data.train and cfg.refiner == run.collect.refiner
    assert cfg.source_options["synthetic:train"]["n"] == run.data.num_synthetic_train
    assert cfg.limit_for("synthetic:train") == 0  # every generated synthetic problem
    assert cfg.limit_for("mbpp:train") == run.data.max_problems_per_source
    assert cfg.samples_per_problem == run.collect.samples_per_problem


def test_cli_fails_fast_on_unreachable_teacher(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable, "-m", "actorlearner.cli", "collect", "--problems", "synthetic:train",
        "--out", str(tmp_path / "out"), "--samples", "0", "--refiner", "teacher",
        "--teacher-url", f"http://127.0.0.1:{port}/v1", "--workers", "0", "collect.teacher.max_retries=1",
        "collect.teacher.backoff_s=0.01",
    ]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert "unreachable" in res.stderr and "--teacher-url" in res.stderr
    assert not (tmp_path / "out" / "units.jsonl").exists()
