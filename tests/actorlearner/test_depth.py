"""Refinement-depth evaluation: the per-round arithmetic, and real episodes end to end."""

from __future__ import annotations

import math

import pytest

from actorlearner.engines.base import Generation, SamplingParams
from actorlearner.pipeline.depth import EpisodeRecord, depth_metrics, evaluate_depth


def test_depth_metrics_hand_computed():
    # Task a: 2 samples, one passes at start (round 0), the other is fixed at round 2.
    # Task b: 2 samples, one fixed at round 1, one never.
    initial = {"a": [True, False], "b": [False, False]}
    records = [
        EpisodeRecord("a", 0, solved_at=2),
        EpisodeRecord("b", 0, solved_at=1),
        EpisodeRecord("b", 1, solved_at=None),
    ]
    m = depth_metrics(records, initial, rounds=2, ks=(1, 2))
    # pass@1 = mean over tasks of c/n: round 0: (1/2 + 0)/2; round 1: (1/2 + 1/2)/2; round 2: (1 + 1/2)/2
    assert m["pass@1"] == pytest.approx([0.25, 0.5, 0.75])
    # pass@2 with n=2: 1 if c >= 1: round 0: (1 + 0)/2; round 1: (1 + 1)/2
    assert m["pass@2"] == pytest.approx([0.5, 1.0, 1.0])
    # refinement success: round 1 fixes 1 of the 3 failing; round 2 fixes 1 of the 2 left
    assert m["refine_success"] == pytest.approx([0.0, 1 / 3, 1 / 2])
    assert m["num_tasks"] == 2 and m["samples_per_task"] == 2
    assert m["solved_at"] == {"a": [0, 2], "b": [1, None]}  # per task, for paired comparisons


def test_pass_at_k_needs_enough_samples():
    m = depth_metrics([EpisodeRecord("a", 0, 1)], {"a": [False]}, rounds=1, ks=(1, 10))
    assert "pass@10" not in m  # n=1 < k=10: not estimable, so not reported
    assert m["pass@1"] == [0.0, 1.0]


class ScriptedPolicy:
    """A policy whose replies are fixed texts (turn by turn), tokenized with the real
    tokenizer: it checks that evaluation counts a fix at the round it happened."""

    version = 0

    def __init__(self, tokenizer, replies_by_turn):
        self.tokenizer = tokenizer
        self.replies = replies_by_turn
        self.calls = 0

    def generate(self, prompts, sampling: SamplingParams):
        turn_texts = {}
        out = []
        for ids in prompts:
            text = self.tokenizer.decode(ids)
            turn = text.count("<|im_start|>assistant") - 1
            reply = self.replies(text, turn)
            turn_texts[turn] = reply
            tok = self.tokenizer(reply + "<|im_end|>", add_special_tokens=False)["input_ids"]
            out.append(Generation(tok, [0.0] * len(tok), "stop"))
        self.calls += 1
        return out

    def load_weights(self, state_dict, version):  # pragma: no cover - not used
        self.version = version


def test_evaluate_depth_counts_fixes_per_round(tiny_model_dir):
    from actorlearner.models import load_tokenizer
    from envs.sources import load_problems
    from envs.templates import format_reply

    problems = load_problems("synthetic:test", n=4, seed=3)
    fixes = {p.task_id: p.metadata["reference_fixes"][0] for p in problems}
    tokenizer = load_tokenizer(tiny_model_dir)

    def replies(prompt_text: str, turn: int) -> str:
        # turn 0: restate the buggy code (still wrong); turn 1: the verified fix,
        # but only for the first two problems; the others keep the bug.
        task = next(p for p in problems if p.metadata["initial_code"].strip()[:40] in prompt_text)
        if turn >= 1 and problems.index(task) < 2:
            return format_reply("The comparison is wrong.", fixes[task.task_id])
        return format_reply("I am not sure.", task.metadata["initial_code"])

    metrics = evaluate_depth(
        ScriptedPolicy(tokenizer, replies), tokenizer, problems, rounds=3, num_envs=2
    )
    assert metrics["pass@1"] == pytest.approx([0.0, 0.0, 0.5, 0.5])
    assert metrics["refine_success"] == pytest.approx([0.0, 0.0, 0.5, 0.0])
    assert not any(math.isnan(x) for x in metrics["pass@1"])


def test_judge_scores_explanations_over_real_http(tiny_model_dir, tmp_path):
    """Table-9 style judging against a real OpenAI-compatible server process."""
    from actorlearner.collect.testing_server import launch
    from actorlearner.models import load_tokenizer
    from actorlearner.pipeline.judge import parse_scores
    from actorlearner.teacher import TeacherConfig
    from envs.sources import load_problems
    from envs.templates import format_reply

    script = {
        "rules": [{"match": "The loop is wrong", "replies": ["Correctness: 4\nHelpfulness: 5"]}],
        "default": ["I refuse to grade."],
    }
    server = launch(script, tmp_path / "judge")
    try:
        problems = load_problems("synthetic:test", n=2, seed=5)
        tokenizer = load_tokenizer(tiny_model_dir)
        first = problems[0].metadata["initial_code"]

        def replies(prompt_text: str, turn: int) -> str:
            expl = "The loop is wrong." if first.strip()[:40] in prompt_text else "No idea."
            return format_reply(expl, "def f():\n    return 0\n")

        metrics = evaluate_depth(
            ScriptedPolicy(tokenizer, replies), tokenizer, problems, rounds=1, num_envs=2,
            judge=TeacherConfig(base_url=server.url, model="judge", api_key_env=None),
        )  # fmt: skip
    finally:
        server.stop()
    # one explanation graded 4/5, the other answer did not follow the format
    assert metrics["judge"] == {"judged": 1, "unparsed": 1, "correctness": 4, "helpfulness": 5}
    assert parse_scores("correctness: 2\nHelpfulness:3") == {"correctness": 2, "helpfulness": 3}
    assert parse_scores("Correctness: 9") is None


def test_evaluate_model_cli(tiny_model_dir, tmp_path):
    """`actorlearner evaluate --model ... --rounds R`: JSON, plot and table; bad paths named."""
    import json

    from typer.testing import CliRunner

    from actorlearner.cli import app

    out = tmp_path / "depth.json"
    args = ["evaluate", "-b", "synthetic:test", "--model", str(tiny_model_dir), "--rounds", "2",
            "--max-problems", "2", "--max-new-tokens", "8", "-o", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())["results"]["synthetic:test"]
    assert len(metrics["pass@1"]) == 3 and metrics["num_tasks"] == 2
    assert out.with_suffix(".png").stat().st_size > 0
    assert "pass@1 per refinement round" in result.output
    missing = CliRunner().invoke(
        app, args[:3] + ["--model", str(tmp_path / "nope"), "-o", str(out)]
    )
    text = " ".join(missing.output.replace("│", " ").split())  # the error box wraps lines
    assert missing.exit_code == 2 and "nope' does not exist" in text, missing.output


def test_cluster_evaluation_matches_in_process(tiny_model_dir):
    """Greedy evaluation on Ray workers (two shards, one batch per round each) gives the
    same replies and metrics as the in-process run with its 16-env batches."""
    import ray

    from actorlearner.engines import make_engine
    from actorlearner.pipeline.cluster_eval import (
        DepthSettings,
        EvalJob,
        evaluate_jobs,
        merge,
        play_shard,
        shards,
    )
    from actorlearner.pipeline.depth import depth_metrics, play_depth
    from actorlearner.pipeline.run import worker_env
    from actorlearner.raycluster import RayRun
    from envs.sources import load_problems

    problems = load_problems("synthetic:test", n=6, seed=1)
    settings = DepthSettings(rounds=2, max_new_tokens=12)
    engine = make_engine("hf", str(tiny_model_dir))
    local = play_depth(engine, engine.tokenizer, problems, 2, max_new_tokens=12)  # type: ignore[attr-defined]
    with RayRun("local", num_cpus=2, runtime_env=worker_env()):
        task = ray.remote(play_shard)
        parts = ray.get(
            [task.remote(str(tiny_model_dir), "hf", s, settings) for s in shards(problems, 2)]
        )
        remote = merge(problems, [(r, p) for r, p, _ in parts])
        jobs = [EvalJob("synthetic:test", str(tiny_model_dir), problems)]
        metrics = evaluate_jobs(jobs, settings)[(str(tiny_model_dir), "synthetic:test")]

    def replies(records):
        return sorted((r.task_id, r.solved_at, r.replies) for r in records)

    assert len(parts) == 2 and replies(remote[0]) == replies(local[0])
    assert all(r.replies for r in local[0])  # real replies were compared
    assert remote[1] == local[1]
    assert metrics.pop("workers") == 2 and metrics.pop("eval_s") > 0
    assert metrics == depth_metrics(*local, rounds=2)
