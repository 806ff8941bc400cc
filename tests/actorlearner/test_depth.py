"""Refinement-depth evaluation: the per-round arithmetic, and real episodes end to end."""

from __future__ import annotations

import math
import os

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


def two_of_four_fixed_in_round_two():
    """Four synthetic problems and scripted replies: turn 0 restates the buggy code (still
    wrong); from turn 1 on, the verified fix, but only for the first two problems."""
    from envs.sources import load_problems
    from envs.templates import format_reply

    problems = load_problems("synthetic:test", n=4, seed=3)
    fixes = {p.task_id: p.metadata["reference_fixes"][0] for p in problems}

    def replies(prompt_text: str, turn: int) -> str:
        task = next(p for p in problems if p.metadata["initial_code"].strip()[:40] in prompt_text)
        if turn >= 1 and problems.index(task) < 2:
            return format_reply("The comparison is wrong.", fixes[task.task_id])
        return format_reply("I am not sure.", task.metadata["initial_code"])

    return problems, replies


def test_evaluate_depth_counts_fixes_per_round(tiny_model_dir):
    from actorlearner.models import load_tokenizer

    problems, replies = two_of_four_fixed_in_round_two()
    tokenizer = load_tokenizer(tiny_model_dir)

    metrics = evaluate_depth(
        ScriptedPolicy(tokenizer, replies), tokenizer, problems, rounds=3, num_envs=2
    )
    assert metrics["pass@1"] == pytest.approx([0.0, 0.0, 0.5, 0.5])
    assert metrics["refine_success"] == pytest.approx([0.0, 0.0, 0.5, 0.0])
    assert not any(math.isnan(x) for x in metrics["pass@1"])


def test_progress_counts_each_round_once_every_failing_episode_played_it(tiny_model_dir):
    """Real episodes, scripted replies: no fix in round 1, two of four in round 2."""
    from actorlearner.evaluation.progress import round_line
    from actorlearner.models import load_tokenizer
    from actorlearner.pipeline.depth import play_depth

    problems, replies = two_of_four_fixed_in_round_two()
    tokenizer = load_tokenizer(tiny_model_dir)

    counts = []
    play_depth(
        ScriptedPolicy(tokenizer, replies), tokenizer, problems, rounds=3, num_envs=2,
        progress=counts.append, groups={p.task_id: "set" for p in problems},
    )  # fmt: skip
    assert [(c.round, c.solved, c.total) for c in counts] == [(1, 0, 4), (2, 2, 4), (3, 2, 4)]
    assert round_line("m", counts[1]).startswith(
        "m on set, round 2/3: 2/4 solved, 2 still failing, "
    )


def test_round_counter_closes_rounds_of_episodes_that_ended_early():
    """A sandbox failure ends an episode unsolved: it counts as failing in later rounds;
    an episode cut by the context limit never steps again: `finish` closes its rounds.
    Workers' counts of one (model, set) are summed once all have reported the round."""
    from actorlearner.evaluation.progress import RoundBoard, RoundCounter

    got = []
    counter = RoundCounter(
        {"a": "s", "b": "s", "c": "s"}, {"a": [True], "b": [False], "c": [False]}, 3, got.append
    )
    counter.step("b", 1, solved=False, ended=True)  # sandbox failure in round 1
    assert got == []  # c has not played round 1
    counter.step("c", 1, solved=False)
    assert [(c.round, c.solved) for c in got] == [(1, 1)]
    counter.step("c", 2, solved=True)
    assert [(c.round, c.solved) for c in got] == [(1, 1), (2, 2), (3, 2)]
    short = []
    cut = RoundCounter({"x": "s"}, {"x": [False]}, 2, short.append)
    cut.step("x", 1, solved=False)
    cut.finish()  # x was cut by the context limit after round 1
    assert [(c.round, c.solved, c.total) for c in short] == [(1, 0, 1), (2, 0, 1)]
    lines = []
    board = RoundBoard(
        lambda model, c: lines.append((model, c.round, c.solved, c.total, c.seconds))
    )
    board.expect("m", "s")
    board.expect("m", "s")
    board.add("m", got[1])
    assert lines == []
    board.add("m", short[1])
    assert lines == [("m", 2, 2, 4, max(got[1].seconds, short[1].seconds))]


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
    """`actorlearner evaluate --model ... --rounds R` as a user runs it: a progress line
    per round between start and table, JSON, plot and table; bad paths named."""
    import json
    import subprocess
    import sys

    from typer.testing import CliRunner

    from actorlearner.cli import app

    out = tmp_path / "depth.json"
    args = ["evaluate", "-b", "synthetic:test", "--model", str(tiny_model_dir), "--rounds", "2",
            "--max-problems", "2", "--max-new-tokens", "8", "-o", str(out)]  # fmt: skip
    run = subprocess.run(
        [sys.executable, "-m", "actorlearner.cli", *args], stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, timeout=600, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    output = run.stdout  # logs and table interleaved as a terminal shows them
    assert run.returncode == 0, output
    metrics = json.loads(out.read_text())["results"]["synthetic:test"]
    assert len(metrics["pass@1"]) == 3 and metrics["num_tasks"] == 2
    assert out.with_suffix(".png").stat().st_size > 0
    name = tiny_model_dir.name
    for rnd in (1, 2):
        solved = sum(s is not None and s <= rnd for v in metrics["solved_at"].values() for s in v)
        line = f"{name} on synthetic:test, round {rnd}/2: {solved}/2 solved, {2 - solved} still failing"
        assert line in output, output
    assert output.index("round 2/2") < output.index("pass@1 per refinement round")
    missing = CliRunner().invoke(
        app, args[:3] + ["--model", str(tmp_path / "nope"), "-o", str(out)]
    )
    text = " ".join(missing.output.replace("│", " ").split())  # the error box wraps lines
    assert missing.exit_code == 2 and "nope' does not exist" in text, missing.output


def test_cluster_evaluation_matches_in_process(tiny_model_dir, caplog):
    """Greedy evaluation on Ray workers (two shards, each playing both problem sets in
    one batch per round) gives the same replies and metrics as the in-process run of
    each set with its 16-env batches, and logs one line per model, set and round."""
    import logging

    import ray

    from actorlearner.engines import make_engine
    from actorlearner.evaluation.progress import RoundCount
    from actorlearner.pipeline.cluster_eval import (
        DepthSettings,
        EvalJob,
        evaluate_jobs,
        merge,
        play_shard,
    )
    from actorlearner.pipeline.depth import depth_metrics, play_depth
    from actorlearner.pipeline.run import worker_env
    from actorlearner.raycluster import RayRun
    from envs.sources import load_problems

    model = str(tiny_model_dir)
    sets = {
        "synthetic:test": load_problems("synthetic:test", n=6, seed=1),
        "synthetic:novel": load_problems("synthetic:novel", n=4, seed=1),
    }
    settings = DepthSettings(rounds=2, max_new_tokens=12)
    engine = make_engine("hf", model)
    local = {
        name: play_depth(engine, engine.tokenizer, ps, 2, max_new_tokens=12)  # type: ignore[attr-defined]
        for name, ps in sets.items()
    }
    caplog.set_level(logging.INFO, logger="actorlearner")
    with RayRun("local", num_cpus=2, runtime_env=worker_env()):
        task = ray.remote(play_shard)
        streams = [
            [ray.get(ref) for ref in task.remote(model, "hf", [(n, ps[i::2]) for n, ps in sets.items()], settings)]
            for i in range(2)
        ]  # fmt: skip
        jobs = [EvalJob(name, model, ps, "tiny") for name, ps in sets.items()]
        metrics = evaluate_jobs(jobs, settings)

    def replies(records):
        return sorted((r.task_id, r.solved_at, r.replies) for r in records)

    for name, ps in sets.items():
        remote = merge(ps, [stream[-1][0][name] for stream in streams])
        assert replies(remote[0]) == replies(local[name][0])
        assert all(r.replies for r in local[name][0])  # real replies were compared
        assert remote[1] == local[name][1]
        got = metrics[(model, name)]
        assert got.pop("workers") == 2 and got.pop("eval_s") > 0
        assert got.pop("idle_priority") is False
        assert got == depth_metrics(*local[name], rounds=2)
    for stream in streams:  # each shard streamed every set's rounds 1 and 2 before its result
        counts = [(c.group, c.round) for c in stream[:-1] if isinstance(c, RoundCount)]
        assert sorted(counts) == sorted((n, r) for n in sets for r in (1, 2))
    lines = [r.getMessage() for r in caplog.records if " round " in r.getMessage()]
    for name, ps in sets.items():
        for rnd in (1, 2):
            solved = sum(
                s is not None and s <= rnd
                for v in metrics[(model, name)]["solved_at"].values()
                for s in v
            )
            line = f"tiny on {name}, round {rnd}/2: {solved}/{len(ps)} solved, {len(ps) - solved} still failing"
            assert any(x.startswith(line) for x in lines), (line, lines)
