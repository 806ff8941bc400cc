"""Paired per-task comparison of stages: counts and sign-test p-values by hand."""

from __future__ import annotations

import pytest

from actorlearner.pipeline.paired import (
    compare_stages,
    paired_comparison,
    paired_lines,
    paired_rewards,
    pass_rates,
)


def test_pass_rates_count_samples_solved_by_the_round():
    solved_at = {"a": [0, 2], "b": [1, None], "c": [None]}
    assert pass_rates(solved_at, 0) == {"a": 0.5, "b": 0.0, "c": 0.0}
    assert pass_rates(solved_at, 2) == {"a": 1.0, "b": 0.5, "c": 0.0}


def test_paired_comparison_counts_tasks_and_tests_the_split():
    before = {f"t{i}": [1 if i < 4 else None] for i in range(10)}  # solves t0..t3
    after = {f"t{i}": [1 if 2 <= i < 10 else None] for i in range(10)}  # t2..t9
    c = paired_comparison(before, after, rnd=1)
    assert (c["tasks"], c["gained"], c["lost"]) == (10, 6, 2)
    # two-sided sign test of 6 vs 2: P(X <= 2 or X >= 6), X ~ Bin(8, 1/2) = 2 * 37/256
    assert c["p_value"] == pytest.approx(74 / 256)
    # the round matters: nothing is solved at round 0, so nothing differs
    assert paired_comparison(before, after, rnd=0)["p_value"] == 1.0


def test_paired_comparison_uses_only_common_tasks_and_sample_shares():
    before = {"a": [1, None], "b": [None, None], "only_before": [1]}
    after = {"a": [1, 1], "b": [None, None], "only_after": [1]}
    c = paired_comparison(before, after, rnd=1)
    assert (c["tasks"], c["gained"], c["lost"]) == (2, 1, 0)  # a: 1/2 -> 2/2; b unchanged
    assert c["p_value"] == pytest.approx(1.0)  # one discordant task is no evidence


def test_compare_stages_chains_stages_and_reports_lines():
    def stage(solved):
        return {"bench": {"pass@1": [0.0, 0.0], "solved_at": solved}}

    results = {
        "base": stage({"a": [None], "b": [None]}),
        "sft": stage({"a": [1], "b": [None]}),
        "ppo": stage({"a": [None], "b": [None]}),
        "old": {"bench": {"pass@1": [0.0, 0.0]}},  # no per-task outcomes: skipped
    }
    paired = compare_stages(results)
    assert list(paired["bench"]) == ["sft_vs_base", "ppo_vs_sft"]
    assert (
        paired["bench"]["ppo_vs_sft"]["lost"] == 1 and paired["bench"]["ppo_vs_sft"]["round"] == 1
    )
    lines = paired_lines(paired)
    assert lines[0].startswith("Paired per task")
    assert "ppo vs sft" in lines[2] and "+0 / -1 of 2 tasks" in lines[2]


def test_probe_rewards_are_compared_start_by_start():
    before = {"a": 0.0, "b": 0.0, "c": 0.0, "d": 0.0, "e": 0.0, "f": 1.0}
    after = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0, "e": 5.0, "f": 1.0, "new": 9.0}
    p = paired_rewards(before, after)
    assert (p["tasks"], p["up"], p["down"]) == (6, 5, 0) and p["mean_change"] == 2.5
    # exact signed-rank test, 5 non-zero changes all up: two-sided p = 2 / 2**5
    assert p["p_value"] == pytest.approx(2 / 32)
    assert paired_rewards(before, before)["p_value"] == 1.0
