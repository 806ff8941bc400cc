"""SyntheticBugs: verified through the real sandbox, held out by names and by (template, bug)."""

from __future__ import annotations

import ast
import builtins

import pytest

import sandbox
from envs.sources import load_problems
from envs.synthetic_bugs import BUG_KINDS, TEMPLATES, VOCAB, generate, name_split, split_pairs


@pytest.fixture(scope="module")
def splits():
    return {s: generate(s, n=150, seed=0) for s in ("train", "test", "novel")}


def _identifiers(code: str) -> set[str]:
    tree = ast.parse(code)
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    names |= {a.arg for n in ast.walk(tree) if isinstance(n, ast.arguments) for a in n.args}
    names |= {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    return names - set(dir(builtins))


def test_every_reference_passes_and_every_bug_fails_in_the_sandbox(splits):
    # one problem for each (template, bug) pair of both splits, plus a random sample
    problems = {
        (p.metadata["template"], p.metadata["bug_kind"]): p for s in splits.values() for p in s
    }
    chosen = list(problems.values()) + [p for s in splits.values() for p in s[:6]]
    assert len(problems) == sum(len(t.bugs) for t in TEMPLATES)  # every pair generated
    jobs = [(p.reference, p.tests) for p in chosen] + [
        (p.metadata["initial_code"], p.tests) for p in chosen
    ]
    verdicts = sandbox.run_batch(jobs)
    fixed, buggy = verdicts[: len(chosen)], verdicts[len(chosen) :]
    for p, v in zip(chosen, fixed, strict=True):
        assert v.passed, (p.task_id, v)
    for p, v in zip(chosen, buggy, strict=True):
        assert not v.passed, (p.task_id, v)


def test_splits_hold_out_names_and_novel_pairs(splits):
    pairs = {
        s: {(p.metadata["template"], p.metadata["bug_kind"]) for p in ps}
        for s, ps in splits.items()
    }
    # test: the training pairs, renamed; novel: the pairs training never sees
    assert pairs["test"] == pairs["train"]
    assert not pairs["train"] & pairs["novel"]
    assert pairs["novel"] == {(t.name, b.kind) for t, b in split_pairs("novel")}
    # every template and every bug kind is seen in training (only the pairing is new)
    for s in ("train", "novel"):
        assert {t for t, _ in pairs[s]} == {t.name for t in TEMPLATES}
        assert {k for _, k in pairs[s]} == set(BUG_KINDS)
    names = {s: set().union(*(_identifiers(p.reference) for p in ps)) for s, ps in splits.items()}
    for held_out in ("test", "novel"):
        assert not names["train"] & names[held_out], names["train"] & names[held_out]
        assert not {p.prompt for p in splits["train"]} & {p.prompt for p in splits[held_out]}
    # held-out names are made-up words from the held-out half of the name space
    assert {name_split(n) for n in names["test"] | names["novel"]} == {"held_out"}
    # training mixes everyday words and made-up ones (which cannot be memorised)
    vocab = {w for words in VOCAB["train"].values() for w in words}
    everyday = [p.metadata["names"]["f"].split("_")[0] in vocab for p in splits["train"]]
    assert 0.35 < sum(everyday) / len(everyday) < 0.65


def test_problem_shape(splits):
    for p in splits["train"][:40] + splits["test"][:40] + splits["novel"][:40]:
        lines = p.reference.strip().splitlines()
        assert 5 <= len(lines) <= 12, p.reference
        assert p.entry_point in p.prompt and p.tests[0].display.startswith("assert ")
        assert any(t.display in p.prompt for t in p.tests)  # one example in the prompt
        assert p.metadata["initial_code"] != p.reference
        expl = p.metadata["reference_explanations"][0]
        assert "{" not in expl and len(expl) > 20
        assert p.metadata["reference_fixes"] == [p.reference]
        assert len(p.prompt) + len(p.reference) < 900  # prompts stay a few hundred tokens


def test_deterministic_and_seeded():
    a = load_problems("synthetic:test", n=20, seed=3)
    b = load_problems("synthetic:test", n=20, seed=3)
    c = load_problems("synthetic:test", n=20, seed=4)
    assert [(p.task_id, p.prompt, p.metadata["initial_code"], p.tests) for p in a] == [
        (p.task_id, p.prompt, p.metadata["initial_code"], p.tests) for p in b
    ]
    assert [p.prompt for p in a] != [p.prompt for p in c]
    assert load_problems("synthetic", n=2)[0].task_id.startswith("synthetic/train/")


def test_explanation_names_the_bug():
    p = next(p for p in generate("novel", n=60) if p.metadata["template"] == "largest")
    names = p.metadata["names"]
    expl = p.metadata["reference_explanations"][0]
    assert (
        f"range(1, len({names['xs']}) - 1)" in expl
        and f"range(1, len({names['xs']}) - 1)" in p.metadata["initial_code"]
    )


def test_bad_split():
    with pytest.raises(ValueError, match="split must be one of"):
        load_problems("synthetic:valid")
