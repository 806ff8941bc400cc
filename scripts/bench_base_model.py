"""Benchmark the shipped base model and what the next size up would cost, on this machine.

    python scripts/bench_base_model.py [--copy-n 50] [--json out.json]

Prints parameters, training tokens and time (from the artifact's training summary),
training and greedy-generation tokens/s measured now for the shipped config and for the
next size up (same process, same thread count, so the ratio is meaningful), and the copy
and parse rates on held-out random-name functions.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

app = typer.Typer(add_completion=False)


def _train_tokens_per_s(model, vocab: int, seq_len: int, batch: int, steps: int) -> float:
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, vocab, (batch, seq_len + 1))
    times = []
    for _ in range(steps + 1):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(input_ids=x[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, vocab), x[:, 1:].reshape(-1)
        )
        loss.backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t)
    return batch * seq_len / min(times[1:])  # first step warms up


@app.command()
def main(
    copy_n: int = typer.Option(50, help="Held-out functions for the copy rate."),
    parse_n: int = typer.Option(30, help="Held-out headers for the parse rate."),
    threads: int = typer.Option(1),
    steps: int = typer.Option(3, help="Timed training steps per config."),
    json_out: Path = typer.Option(None, "--json", help="Also write the numbers here."),
) -> None:
    import torch
    from rich.console import Console
    from rich.table import Table

    from actorlearner.base_model import BASE_MODEL_DIR, load_base_model
    from actorlearner.base_model.evaluate import copy_scores, generation_speed, parse_rate
    from actorlearner.base_model.model import ModelConfig, build_model

    torch.set_num_threads(threads)
    model, tokenizer = load_base_model()
    summary = json.loads((BASE_MODEL_DIR / "training_summary.json").read_text())
    state, run_cfg = summary["state"], summary["config"]
    seq_len, batch = run_cfg["seq_len"], run_cfg["batch_size"]
    shipped_cfg = ModelConfig(**run_cfg["model"])
    h = shipped_cfg.hidden_size + 128
    bigger_cfg = ModelConfig(
        hidden_size=h,
        num_layers=shipped_cfg.num_layers + 2,
        num_heads=h // 64,
        intermediate_size=(8 * h // 3 + 31) // 32 * 32,
    )
    torch.manual_seed(0)
    bigger = build_model(bigger_cfg, tokenizer)
    fresh = build_model(shipped_cfg, tokenizer)
    vocab = len(tokenizer)
    rows = {
        "params": (model.num_parameters(), bigger.num_parameters()),
        "train tokens/s (now)": (
            _train_tokens_per_s(fresh, vocab, seq_len, batch, steps),
            _train_tokens_per_s(bigger, vocab, seq_len, batch, steps),
        ),
        "greedy tokens/s, batch 1": (
            generation_speed(model, tokenizer, 1),
            generation_speed(bigger.eval(), tokenizer, 1),
        ),
        "greedy tokens/s, batch 8": (
            generation_speed(model, tokenizer, 8),
            generation_speed(bigger.eval(), tokenizer, 8),
        ),
    }
    copy, copy_lines = copy_scores(model, tokenizer, copy_n)
    natural, natural_lines = copy_scores(model, tokenizer, copy_n, natural=True)
    parsed = parse_rate(model, tokenizer, parse_n)
    table = Table(title="base model (shipped) vs next size up")
    table.add_column("metric")
    table.add_column(f"shipped ({shipped_cfg.hidden_size}x{shipped_cfg.num_layers})")
    table.add_column(f"next ({bigger_cfg.hidden_size}x{bigger_cfg.num_layers})")
    table.add_column("next / shipped")
    for name, (a, b) in rows.items():
        table.add_row(name, f"{a:,.0f}", f"{b:,.0f}", f"{b / a:.2f}x")
    console = Console()
    console.print(table)
    train_tps = state["tokens"] / state["train_seconds"]
    speed_ratio = rows["train tokens/s (now)"][0] / rows["train tokens/s (now)"][1]
    console.print(
        f"trained: {state['step']:,} steps, {state['tokens']:,} tokens in "
        f"{state['train_seconds'] / 60:.1f} min ({train_tps:.0f} tokens/s on a shared CPU thread)\n"
        f"copy rate {copy:.0%} exact, {copy_lines:.0%} of lines (n={copy_n}); with everyday "
        f"names {natural:.0%} exact, {natural_lines:.0%} of lines; parse rate {parsed:.0%} (n={parse_n})\n"
        f"next size up: the same tokens would take ~{speed_ratio:.1f}x the time "
        f"(~{speed_ratio * state['train_seconds'] / 60:.0f} min at this run's rate)"
    )
    if json_out:
        out = {k: {"shipped": a, "next": b} for k, (a, b) in rows.items()}
        out |= {
            "copy_rate": copy,
            "natural_copy_rate": natural,
            "parse_rate": parsed,
            "training": state,
            "next_config": bigger_cfg.__dict__,
            "train_time_ratio_next": speed_ratio,
        }
        json_out.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    app()
