"""How many decoding steps n-gram prompt lookup would save in greedy evaluation.

    python scripts/prompt_lookup_headroom.py --model runs/tiny_cpu/models/sft [--shards 2]

Plays one evaluation shard of the config's benchmarks (the evaluate stage's settings),
records every generate call's prompts and greedy replies, then replays each reply as
prompt lookup would decode it: at each step the draft is the K tokens that followed
the last earlier occurrence of the row's final n tokens, the accepted part is the
draft's prefix that equals the real reply, and the step emits it plus one token. Prints,
for each K, tokens per row step, the batch's decoding steps (the longest row of each
call) before and after, and the share of drafted tokens accepted. Greedy replies are
what a verifying forward would accept, so these counts are exact up to float ties.
"""

from __future__ import annotations

import argparse

Call = list[tuple[list[int], list[int]]]  # (prompt, reply) of every row of a call


def lookup_steps(prompt: list[int], reply: list[int], n: int, k: int) -> tuple[int, int, int]:
    """(steps, drafted tokens, accepted tokens) to decode `reply` after `prompt`."""
    seq = list(prompt)
    after = {tuple(seq[i - n : i]): i for i in range(n, len(seq))}  # n-gram -> next index
    done = steps = drafted = accepted = 0
    while done < len(reply):
        start = after.get(tuple(seq[-n:]))
        draft = seq[start : start + k] if start is not None else []
        a = 0
        while a < len(draft) and done + a < len(reply) and draft[a] == reply[done + a]:
            a += 1
        for token in reply[done : done + min(a + 1, len(reply) - done)]:
            after[tuple(seq[-n:])] = len(seq)
            seq.append(token)
        done += min(a + 1, len(reply) - done)
        steps, drafted, accepted = steps + 1, drafted + len(draft), accepted + a
    return steps, drafted, accepted


def record_shard(args: argparse.Namespace) -> list[Call]:
    from actorlearner.config import load_config
    from actorlearner.engines import hf
    from actorlearner.pipeline.cluster_eval import play_sets
    from actorlearner.pipeline.stages import depth_settings, load_problem_set

    cfg = load_config(args.config)
    sets = [(b, load_problem_set(cfg, b)[:: args.shards]) for b in cfg.evaluate.benchmarks]
    settings = depth_settings(cfg)
    calls: list[Call] = []
    generate = hf.HFEngine.generate

    def recording(self, prompts, sampling):
        asked = [list(p) for p in prompts]  # the runner extends its lists after the call
        out = generate(self, prompts, sampling)
        calls.append([(p, g.token_ids) for p, g in zip(asked, out, strict=True)])
        return out

    hf.HFEngine.generate = recording  # type: ignore[method-assign]
    try:
        play_sets(args.model, "hf", sets, settings)
    finally:
        hf.HFEngine.generate = generate  # type: ignore[method-assign]
    return calls


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", required=True, help="a model dir (a run's models/sft) or `base`")
    ap.add_argument("--config", default="configs/tiny_cpu.yaml")
    ap.add_argument("--shards", type=int, default=2, help="play every n-th problem (one shard)")
    ap.add_argument("--ngram", type=int, default=3)
    args = ap.parse_args()
    from actorlearner.pipeline.run import resolve_model_path

    args.model = resolve_model_path(args.model)
    try:
        calls = record_shard(args)
    except OSError as exc:  # a model path that does not load: its one-line reason
        raise SystemExit(f"error: {exc}") from None
    tokens = sum(len(r) for call in calls for _, r in call)
    plain = sum(max(len(r) for _, r in call) for call in calls)
    print(f"{len(calls)} generate calls, {tokens} reply tokens, {plain} batch decoding steps")
    for k in (2, 4, 8):
        rows = [[lookup_steps(p, r, args.ngram, k) for p, r in call] for call in calls]
        steps = sum(s for call in rows for s, _, _ in call)
        batch = sum(max(s for s, _, _ in call) for call in rows)
        drafted = sum(d for call in rows for _, d, _ in call)
        accepted = sum(a for call in rows for _, _, a in call)
        print(
            f"K={k}: {tokens / steps:.2f} tokens per row step, batch steps {plain} -> {batch} "
            f"({batch / plain:.2f}x), {accepted / max(drafted, 1):.0%} of drafted tokens accepted"
        )


if __name__ == "__main__":
    main()
