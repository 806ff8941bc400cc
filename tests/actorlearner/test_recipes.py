"""Each GPU recipe's code path on CPU: its real architecture shrunk, its LoRA, ZeRO stage,
ranks, actors and GPU placement (Ray logical GPUs, gloo, the HF engine for vLLM)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ["qwen2.5-coder-1.5b", "codellama-7b", "starcoder-15b"]
# how weights reach the actors: colocated on a learner's GPU -> object store (CUDA IPC into
# vLLM); actors on GPUs of their own -> collective buckets from learner rank 0
PUSH = {"qwen2.5-coder-1.5b": "object_store", "codellama-7b": "collective",
        "starcoder-15b": "collective"}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_check_passes(recipe):
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts/check_recipe.py"),
            str(ROOT / f"configs/{recipe}.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    lines = out.stdout.strip().splitlines()
    assert out.returncode == 0 and lines, out.stderr[-3000:]
    assert "recipe ok" in lines[-1], out.stdout[-2000:]
    assert f"{PUSH[recipe]} weight push" in lines[-1], lines[-1]


def test_recipe_families_and_shrunk_architectures():
    sys.path.insert(0, str(ROOT / "scripts"))
    from check_recipe import family, shrunk_config

    from actorlearner.config import load_config
    from actorlearner.learner.policy import check_lora_targets
    from actorlearner.models import load_tokenizer

    tok = load_tokenizer(str(ROOT / "actorlearner/assets/base_model"))
    fams = {}
    for recipe in RECIPES:
        cfg = load_config(ROOT / f"configs/{recipe}.yaml")
        fams[recipe] = family(cfg.model.path)
        if cfg.model.lora.enabled:  # the recipe's targets exist in its architecture
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_config(shrunk_config(fams[recipe], tok))
            check_lora_targets(model, list(cfg.model.lora.target_modules))
    assert fams == {
        "qwen2.5-coder-1.5b": "qwen2",
        "codellama-7b": "llama",
        "starcoder-15b": "gpt_bigcode",
    }
