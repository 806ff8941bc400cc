"""Measured abilities of a base model: copy rate, parse rate, generation speed.

Used by the export step (numbers for the model card), the benchmark script and the tests.
"""

from __future__ import annotations

import ast
import difflib
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from actorlearner.base_model.copy_tasks import restate_prompt
from actorlearner.base_model.heldout import heldout_functions
from actorlearner.chat import IM_END, render

_FENCE = re.compile(r"```python\n(.*?)\n```", re.DOTALL)


@torch.no_grad()
def greedy(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int = 8):
    """Greedy continuations (text) of `prompts`, batched with left padding; stops at IM_END/EOS."""
    stop = [tokenizer.convert_tokens_to_ids(IM_END), tokenizer.eos_token_id]
    tokenizer.padding_side = "left"
    out: list[str] = []
    for i in range(0, len(prompts), batch_size):
        enc = tokenizer(prompts[i : i + batch_size], return_tensors="pt", padding=True)
        gen = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=stop,
            pad_token_id=tokenizer.pad_token_id,
        )
        new = gen[:, enc["input_ids"].shape[1] :]
        out += tokenizer.batch_decode(new, skip_special_tokens=True)
    return out


def extract_code(reply: str) -> str | None:
    match = _FENCE.search(reply)
    return match.group(1) if match else None


def copy_prompt(code: str) -> str:
    return render([{"role": "user", "content": restate_prompt(code)}], add_generation_prompt=True)


def copy_scores(
    model, tokenizer, n: int = 20, seed: int = 12345, natural: bool = False
) -> tuple[float, float]:
    """(exact, line) copy rates on held-out functions restated from the prompt, with
    made-up names (default) or everyday ones (`natural`).

    exact: share of functions reproduced character for character; line: share of all
    target lines found verbatim, in order, in the reply (partial credit for long functions).
    """
    functions = heldout_functions(n, seed, natural)
    budget = max(len(tokenizer.encode(f)) for f in functions) + 16
    replies = greedy(model, tokenizer, [copy_prompt(f) for f in functions], budget)
    exact, lines_ok, lines_total = 0, 0, 0
    for reply, target in zip(replies, functions, strict=True):
        code = extract_code(reply)
        if code is None:  # unterminated fence: still give the lines written so far
            code = reply.split("```python\n", 1)[-1]
        exact += code == target
        want, got = target.splitlines(), code.splitlines()
        blocks = difflib.SequenceMatcher(None, want, got, autojunk=False).get_matching_blocks()
        lines_ok += sum(b.size for b in blocks)
        lines_total += len(want)
    return exact / n, lines_ok / lines_total


def copy_rate(model, tokenizer, n: int = 20, seed: int = 12345) -> float:
    """Share of held-out random-name functions the model restates exactly from its prompt."""
    return copy_scores(model, tokenizer, n, seed)[0]


def complete_function(prompt: str, completion: str, hit_limit: bool) -> str | None:
    """The function the model wrote: cut at the first non-indented line after the header.

    None when the model added no complete body line of its own (the prompt alone must not
    count as a parsable completion).
    """
    prompt_lines = prompt.splitlines()
    lines = (prompt + completion).splitlines()
    body = [lines[0]]
    for line in lines[1:]:
        if line and not line[0].isspace():
            break
        body.append(line)
    if hit_limit and len(body) == len(lines):
        body = body[:-1]  # the last line was cut mid-way by the token budget
    while body and not body[-1].strip():
        body.pop()
    if len(body) <= len(prompt_lines):
        return None
    return "\n".join(body)


def parses(source: str | None) -> bool:
    if source is None:
        return False
    try:
        ast.parse(source)
    except (SyntaxError, ValueError):
        return False
    return True


def parse_rate(model, tokenizer, n: int = 20, seed: int = 777, max_new_tokens: int = 64) -> float:
    """Share of greedy completions of held-out function headers (+ first line) that parse."""
    prompts = []
    for f in heldout_functions(n, seed):
        # No trailing newline: BPE merges a newline with the next line's indentation, so
        # the model must write that token itself (a bare newline means "dedent").
        prompts.append("\n".join(f.splitlines()[:2]))
    completions = greedy(model, tokenizer, prompts, max_new_tokens)
    ok = 0
    for p, c in zip(prompts, completions, strict=True):
        hit_limit = len(tokenizer.encode(c)) >= max_new_tokens - 1
        ok += parses(complete_function(p, c, hit_limit))
    return ok / n


def generation_speed(model, tokenizer, batch_size: int, new_tokens: int = 64) -> float:
    """Greedy generated tokens per second (no early stop) for `batch_size` copy prompts."""
    prompts = [copy_prompt(f) for f in heldout_functions(batch_size, seed=4242)]
    tokenizer.padding_side = "left"
    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    t = time.perf_counter()
    with torch.no_grad():
        model.generate(
            **enc,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
    return batch_size * new_tokens / (time.perf_counter() - t)


@dataclass
class Abilities:
    copy_rate: float
    copy_line_rate: float
    copy_n: int
    natural_copy_rate: float
    natural_copy_line_rate: float
    parse_rate: float
    random_parse_rate: float
    parse_n: int
    gen_tokens_per_s_batch1: float
    gen_tokens_per_s_batch8: float


def measure_abilities(model_dir: str | Path, copy_n: int = 50, parse_n: int = 30) -> dict:
    """Copy and parse rates of the model in `model_dir` (and a random twin), and its speed."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    torch.manual_seed(0)
    random_model = AutoModelForCausalLM.from_config(model.config).eval()
    exact, line = copy_scores(model, tokenizer, copy_n)
    natural, natural_line = copy_scores(model, tokenizer, copy_n, natural=True)
    return asdict(
        Abilities(
            copy_rate=exact,
            copy_line_rate=line,
            copy_n=copy_n,
            natural_copy_rate=natural,
            natural_copy_line_rate=natural_line,
            parse_rate=parse_rate(model, tokenizer, parse_n),
            random_parse_rate=parse_rate(random_model, tokenizer, parse_n),
            parse_n=parse_n,
            gen_tokens_per_s_batch1=generation_speed(model, tokenizer, 1),
            gen_tokens_per_s_batch8=generation_speed(model, tokenizer, 8),
        )
    )
