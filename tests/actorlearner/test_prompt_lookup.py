"""The prompt-lookup replay of scripts/prompt_lookup_headroom.py, by hand-computed steps."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "prompt_lookup_headroom.py"
spec = importlib.util.spec_from_file_location("prompt_lookup_headroom", SCRIPT)
assert spec is not None and spec.loader is not None
headroom = importlib.util.module_from_spec(spec)
spec.loader.exec_module(headroom)


def test_a_repeated_span_is_drafted_and_partly_accepted():
    # the prompt ends in 1 2 3, seen before followed by 4 5 1 2: the draft; the reply
    # agrees on 4 5, then the step emits its own 9 (one step for three tokens); after
    # that, 5 9 has never been seen: one token per step
    steps = headroom.lookup_steps([1, 2, 3, 4, 5, 1, 2, 3], [4, 5, 9, 7, 6], n=3, k=4)
    assert steps == (3, 4, 2)


def test_no_earlier_ngram_means_one_token_per_step():
    assert headroom.lookup_steps([1, 2, 3], [4, 5, 6], n=2, k=4) == (3, 0, 0)


def test_a_loop_in_the_reply_drafts_from_the_reply_itself():
    # the reply repeats 7 8 9: five single steps until 7 8 has been seen followed by 9,
    # then a step of 3 drafted + 1 (9 7 8 9), then the last 3 drafted (nothing left after)
    reply = [7, 8, 9] * 4
    assert headroom.lookup_steps([1], reply, n=2, k=3) == (7, 6, 6)
