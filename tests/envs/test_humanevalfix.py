"""HumanEvalFix: real data, real sandbox. Canonical solutions pass, buggy ones fail,
episodes start from the bug, and a user's own bug set works the same way."""

from __future__ import annotations

import json
from collections import Counter

import gymnasium as gym
import pytest
from typer.testing import CliRunner

import envs  # noqa: F401  (registers CodeRefine-v0)
from actorlearner.cli import app
from actorlearner.evaluation.groups import pass1_by_group, task_groups
from envs.sources import load_problems

LOOP_OR_HELPER_TASKS = (32, 38, 44, 50, 53, 129, 151)  # tests that are not plain asserts


@pytest.fixture(scope="module")
def problems():
    return load_problems("humanevalfix")


def test_problems_carry_the_bug_and_its_type(problems):
    assert len(problems) == 164 and len({p.task_id for p in problems}) == 164
    assert Counter(p.metadata["bug_type"] for p in problems) == {
        "value misuse": 44, "missing logic": 33, "excess logic": 31,
        "operator misuse": 25, "variable misuse": 23, "function misuse": 8,
    }  # fmt: skip
    assert all(p.metadata["initial_code"] != p.reference for p in problems)
    assert all(p.metadata["initial_code"].startswith(p.prompt) for p in problems)
    by_id = {p.task_id: p for p in problems}
    loops = [by_id[f"Python/{n}"] for n in LOOP_OR_HELPER_TASKS]
    assert all(len(p.tests) >= 7 for p in loops)
    assert [p.metadata["test_origin"] for p in loops].count("base_input") == 6
    assert {t.oracle for t in by_id["Python/32"].tests} == {"find_zero"}


def test_every_buggy_solution_fails(problems):
    from sandbox import run_batch
    from sandbox.types import Limits

    jobs = [(p.program(p.metadata["initial_code"]), p.tests) for p in problems]
    verdicts = run_batch(jobs, limits=Limits(timeout_s=3, cpu_s=3))
    assert [p.task_id for p, v in zip(problems, verdicts, strict=True) if v.passed] == []
    assert Counter(v.status for v in verdicts)["failed"] > 150


def test_canonical_solutions_score_164_of_164(tmp_path):
    out = tmp_path / "canonical.jsonl"
    args = ["evaluate", "--benchmark", "humanevalfix", "--canonical", "-o", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "skipped" not in result.output  # one reference per task: pass@1 only
    metrics = json.loads(out.with_suffix(".metrics.json").read_text())
    assert metrics["num_tasks"] == 164 and metrics["pass@k"]["base"]["pass@1"] == 1.0
    assert metrics["status_counts"] == {"passed": 164}
    rows = metrics["by_bug_type"]
    assert len(rows) == 6 and sum(r["num_tasks"] for r in rows.values()) == 164
    assert all(r["pass@1"] == [1.0] for r in rows.values())
    assert "pass@1 per bug type" in result.output and "value misuse" in result.output


def test_episodes_start_from_the_buggy_solution(problems):
    env = gym.make("CodeRefine-v0", problems=problems[:3], max_turns=1)
    _, info = env.reset(seed=0)
    problem = next(p for p in problems[:3] if p.task_id == info["task_id"])
    assert info["initial_code"] == problem.metadata["initial_code"]
    assert not info["verdict"].passed


def test_own_bug_set_in_the_generic_format(tmp_path):
    row = {
        "task_id": "add",
        "prompt": "Write add(a, b).",
        "entry_point": "add",
        "tests": ["assert add(1, 2) == 3"],
        "initial_code": "def add(a, b):\n    return a - b\n",
        "bug_type": "operator misuse",
    }
    path = tmp_path / "bugs.jsonl"
    path.write_text(json.dumps(row) + "\n")
    (problem,) = load_problems(str(path))
    assert problem.metadata["initial_code"] == row["initial_code"]
    assert task_groups([problem]) == {"add": "operator misuse"}
    _, info = gym.make("CodeRefine-v0", problems=[problem]).reset(seed=0)
    assert info["initial_code"] == row["initial_code"] and not info["verdict"].passed
    path.write_text(json.dumps({**row, "initial_code": 3}) + "\n")
    with pytest.raises(ValueError, match="'initial_code' must be a str"):
        load_problems(str(path))


def test_pass1_by_bug_type():
    solved_at = {"a": [1], "b": [None], "c": [0, 2], "d": [None]}
    groups = {"a": "x", "b": "x", "c": "y"}
    rows = pass1_by_group(solved_at, groups, rounds=2)
    assert rows == {
        "x": {"num_tasks": 2, "pass@1": [0.0, 0.5, 0.5]},
        "y": {"num_tasks": 1, "pass@1": [0.5, 0.5, 1.0]},
    }


def test_depth_benchmark_reports_each_bug_type(tiny_model_dir, tmp_path):
    out = tmp_path / "depth.json"
    args = ["evaluate", "-b", "humanevalfix", "--model", str(tiny_model_dir), "--rounds", "1",
            "--max-problems", "3", "--max-new-tokens", "8", "-o", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())["results"]["humanevalfix"]
    assert metrics["pass@1"][0] == 0.0 and metrics["num_tasks"] == 3  # every start is a bug
    rows = metrics["by_bug_type"]
    assert sum(r["num_tasks"] for r in rows.values()) == 3
    assert all(len(r["pass@1"]) == 2 for r in rows.values())
    assert "pass@1 per bug type and round" in result.output
    assert all(bug_type in result.output for bug_type in rows)
