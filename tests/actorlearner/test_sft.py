"""SFT data, masking, bucketing, training, and SIGTERM-resume on the tiny model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from actorlearner.chat import IM_END
from actorlearner.learner import LearnerConfig, SFTConfig
from actorlearner.learner.sft import length_buckets, load_records, tokenize_messages

SYSTEM = "You explain what is wrong with code and then fix it."


def reply(k: int) -> str:
    return (
        f"The function subtracts {k} where it should add {k}.\n"
        f"```python\ndef add_{k}(x):\n    return x + {k}\n```"
    )


def record(k: int) -> dict:
    wrong = f"def add_{k}(x):\n    return x - {k}\n"
    user = f"Fix this code:\n```python\n{wrong}```\nadd_{k}(1) returned {1 - k}, expected {1 + k}."
    return {
        "task_id": f"add/{k}",
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": user},
            {"role": "assistant", "content": reply(k)},
        ],
        "wrong_code": wrong,
    }


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def trained_text(example, tokenizer) -> str:
    ids = [i for i, m in zip(example.input_ids, example.loss_mask, strict=True) if m]
    return tokenizer.decode(ids)


def test_loss_only_on_the_reply(tokenizer):
    example = tokenize_messages(record(3)["messages"], tokenizer)
    assert trained_text(example, tokenizer) == reply(3) + IM_END
    assert tokenizer.decode(example.input_ids).startswith("<|im_start|>system\n" + SYSTEM)


def test_refine_only_masks_the_explanation(tokenizer):
    example = tokenize_messages(record(3)["messages"], tokenizer, refine_only=True)
    code = reply(3)[reply(3).index("```python") :]
    assert trained_text(example, tokenizer) == code + IM_END


def test_multi_turn_trains_every_reply_and_masks_feedback(tokenizer):
    messages = record(2)["messages"] + [
        {"role": "user", "content": "add_2(0) returned 1, expected 2."},
        {"role": "assistant", "content": reply(5)},
    ]
    example = tokenize_messages(messages, tokenizer)
    assert trained_text(example, tokenizer) == reply(2) + IM_END + reply(5) + IM_END


def test_malformed_lines_name_file_and_line(tmp_path):
    good = json.dumps(record(1))
    cases = {
        "{not json": "invalid JSON",
        json.dumps({"task_id": "x"}): "'messages' list",
        json.dumps({"messages": [{"role": "robot", "content": "hi"}]}): "'role'",
        json.dumps({"messages": [{"role": "user", "content": "hi"}]}): "no assistant",
    }
    for bad, message in cases.items():
        path = tmp_path / "data.jsonl"
        path.write_text(good + "\n\n" + bad + "\n")
        with pytest.raises(ValueError, match=f"data.jsonl:3: .*{message}"):
            load_records(path)
    with pytest.raises(FileNotFoundError, match="collect"):
        load_records(tmp_path / "missing.jsonl")


def test_length_buckets_cover_everything_within_budget():
    lengths = [5, 50, 7, 48, 6, 52, 8, 49, 100, 3]
    batches = length_buckets(lengths, batch_tokens=100, seed=0)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 100
    # sorting within the window keeps short and long apart: padding stays small
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    assert padded <= 1.2 * sum(lengths)
    assert batches == length_buckets(lengths, 100, seed=0)
    assert batches != length_buckets(lengths, 100, seed=1)


def sft_config(model_dir, tmp_path: Path, **sft) -> LearnerConfig:
    train = write_jsonl(tmp_path / "train.jsonl", [record(k) for k in range(10, 58)])
    held = write_jsonl(tmp_path / "held.jsonl", [record(k) for k in range(60, 68)])
    defaults = dict(data=str(train), eval_data=str(held), batch_tokens=768, eval_interval=1000)
    return LearnerConfig(
        model=str(model_dir),
        lr=3e-3,
        micro_batch_size=8,
        checkpoint_dir=str(tmp_path / "ckpt"),
        sft=SFTConfig(**{**defaults, **sft}),
    )


def test_sft_lowers_held_out_loss(tiny_model_dir, tmp_path):
    from actorlearner.learner.deepspeed_backend import DeepSpeedLearner
    from actorlearner.learner.sft_loop import eval_batches, load_sft_data, train_sft

    torch.set_num_threads(1)
    cfg = sft_config(tiny_model_dir, tmp_path, epochs=3)
    learner = DeepSpeedLearner(cfg)
    data = load_sft_data(cfg, learner.tokenizer)
    held = eval_batches(data.held_out, learner.pad_id, 4096)
    before = learner.sft_eval(held)["eval/loss"]
    final = train_sft(learner, cfg, data)
    after = final["eval/loss"]  # the loop evaluates at its last step
    print(f"held-out loss {before:.3f} -> {after:.3f} in {learner.step} steps")
    assert after < before - 1.0
    assert after == pytest.approx(learner.sft_eval(held)["eval/loss"], rel=1e-6)


def test_sigterm_saves_and_resume_matches_uninterrupted(tiny_model_dir, tmp_path):
    from omegaconf import OmegaConf

    from actorlearner.learner.deepspeed_backend import DeepSpeedLearner
    from actorlearner.learner.sft_loop import load_sft_data, train_sft

    torch.set_num_threads(1)
    cfg = sft_config(tiny_model_dir, tmp_path, epochs=10_000, max_steps=100_000)
    config_path = tmp_path / "sft.yaml"
    OmegaConf.save(OmegaConf.structured(cfg), config_path)

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "actorlearner.learner.sft_loop", str(config_path)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    killed_losses: dict[int, float] = {}
    try:
        for line in proc.stdout:
            if line.startswith("step "):
                _, step, _, loss = line.split()
                killed_losses[int(step)] = float(loss)
                if int(step) == 2:
                    proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    last = max(killed_losses)
    assert last < 100_000  # it stopped because of the signal
    state = json.loads(
        (Path(cfg.checkpoint_dir) / f"step_{last:08d}" / "trainer_state.json").read_text()
    )
    assert state["step"] == last

    # uninterrupted reference, then a fresh learner resuming from the signal's checkpoint
    reference: dict[int, float] = {}
    straight_cfg = sft_config(tiny_model_dir, tmp_path, epochs=10_000, max_steps=last + 3)
    straight_cfg.checkpoint_dir = ""
    learner = DeepSpeedLearner(straight_cfg)
    data = load_sft_data(straight_cfg, learner.tokenizer)
    train_sft(
        learner, straight_cfg, data, on_metrics=lambda m, s: reference.setdefault(s, m["loss/sft"])
    )
    del learner

    resumed: dict[int, float] = {}
    resume_cfg = sft_config(tiny_model_dir, tmp_path, epochs=10_000, max_steps=last + 3)
    learner = DeepSpeedLearner(resume_cfg)
    train_sft(
        learner,
        resume_cfg,
        data,
        resume=True,
        on_metrics=lambda m, s: resumed.setdefault(s, m["loss/sft"]),
    )
    assert sorted(resumed) == [last + 1, last + 2, last + 3]
    for step, loss in resumed.items():
        assert loss == pytest.approx(reference[step], rel=1e-5), step
    for step, loss in killed_losses.items():  # the killed process walked the same path
        assert loss == pytest.approx(reference[step], rel=1e-5), step


def test_prune_keeps_the_newest_checkpoints(tmp_path):
    from actorlearner.learner.checkpoint import latest_tag, prune

    for step in range(1, 6):
        (tmp_path / f"step_{step:08d}").mkdir()
    (tmp_path / "latest").write_text("step_00000005")
    removed = prune(tmp_path, keep=2)
    assert [p.name for p in removed] == [f"step_{s:08d}" for s in (1, 2, 3)]
    assert sorted(p.name for p in tmp_path.glob("step_*")) == ["step_00000004", "step_00000005"]
    assert latest_tag(tmp_path) == "step_00000005"
    assert prune(tmp_path, keep=0) == []
