"""Synthetic copy-heavy chat tasks, in the project's chat format.

Downstream, the policy reads a wrong function in the prompt and answers with an
explanation and the whole corrected function. These tasks teach the prerequisite: read
code in the context and reproduce it exactly, with a targeted change where asked. Every
function gets fresh random names, so copying, not memorising, is what pays.
"""

from __future__ import annotations

import ast
import io
import random
import tokenize
from collections.abc import Callable

from actorlearner.base_model.names import local_names, random_identifier, randomize_names, rename
from actorlearner.chat import render

SYSTEM_PROMPTS = (
    "You are a careful Python programmer.",
    "You are a helpful assistant that writes Python code.",
    "You explain code and fix bugs. Answer with a short explanation and the whole program.",
)

# Token swaps for the "change one token" task: plausible single-token edits.
_SWAPS = {
    "<": "<=",
    "<=": "<",
    ">": ">=",
    ">=": ">",
    "==": "!=",
    "!=": "==",
    "+": "-",
    "-": "+",
    "*": "//",
    "and": "or",
    "or": "and",
    "True": "False",
    "False": "True",
    "0": "1",
    "1": "0",
    "2": "3",
    "is": "is not",
    "in": "not in",
    "min": "max",
    "max": "min",
    "append": "extend",
}


def fence(code: str) -> str:
    return f"```python\n{code}\n```"


def restate_prompt(code: str) -> str:
    """The user message of the restate task (shared with the copy-rate evaluation)."""
    return f"Repeat this function exactly, in a python code block:\n{fence(code)}"


def _restate(code: str, rng: random.Random) -> tuple[str, str]:
    prompt = rng.choice(
        (
            restate_prompt(code),
            f"Here is a function:\n{fence(code)}\nWrite it out again without changes.",
            f"{fence(code)}\nCopy the code above.",
        )
    )
    return prompt, fence(code)


def _rename(code: str, rng: random.Random) -> tuple[str, str] | None:
    names = local_names(ast.parse(code).body[0])  # type: ignore[arg-type]
    if not names:
        return None
    old = rng.choice(names)
    new = random_identifier(rng, set(names))
    prompt = f"Rename `{old}` to `{new}` everywhere in this function:\n{fence(code)}"
    return prompt, f"Renamed `{old}` to `{new}`.\n{fence(rename(code, {old: new}))}"


def _line(code: str, rng: random.Random) -> tuple[str, str]:
    lines = code.splitlines()
    n = rng.randrange(len(lines))
    prompt = f"What is line {n + 1} of this code?\n{fence(code)}"
    return prompt, f"Line {n + 1} is:\n{fence(lines[n].strip())}"


def _change_token(code: str, rng: random.Random) -> tuple[str, str] | None:
    """Copy the function with one token swapped, in the explain-then-code reply format."""
    toks = list(tokenize.generate_tokens(io.StringIO(code).readline))
    spots = [t for t in toks if t.string in _SWAPS]
    if not spots:
        return None
    tok = rng.choice(spots)
    new = _SWAPS[tok.string]
    lines = code.splitlines()
    row, (c0, c1) = tok.start[0] - 1, (tok.start[1], tok.end[1])
    line = lines[row]
    lines[row] = line[:c0] + new + line[c1:]
    changed = "\n".join(lines)
    prompt = (
        f"In line {row + 1}, `{line.strip()}`, change `{tok.string}` to `{new}`. "
        f"Return the whole function.\n{fence(code)}"
    )
    reply = f"Line {row + 1} should use `{new}` instead of `{tok.string}`.\n{fence(changed)}"
    return prompt, reply


def _delete_line(code: str, rng: random.Random) -> tuple[str, str] | None:
    lines = code.splitlines()
    candidates = [i for i in range(1, len(lines)) if lines[i].strip().startswith(("print", "#"))]
    if not candidates:
        candidates = [i for i in range(1, len(lines)) if "=" in lines[i] and ":" not in lines[i]]
    if not candidates:
        return None
    i = rng.choice(candidates)
    kept = "\n".join(lines[:i] + lines[i + 1 :])
    try:
        ast.parse(kept)
    except SyntaxError:
        return None
    prompt = f"Remove line {i + 1} (`{lines[i].strip()}`) and show the function:\n{fence(code)}"
    return prompt, f"Without line {i + 1}:\n{fence(kept)}"


TaskFn = Callable[[str, random.Random], "tuple[str, str] | None"]
TASKS: dict[str, tuple[TaskFn, float]] = {
    "restate": (_restate, 0.35),
    "rename": (_rename, 0.2),
    "change_token": (_change_token, 0.25),
    "line": (_line, 0.1),
    "delete_line": (_delete_line, 0.1),
}


def make_task(
    function_source: str,
    rng: random.Random,
    name_pool: list[str] | None = None,
    natural_name_share: float = 0.0,
) -> str | None:
    """One rendered chat (system?, user, assistant) built on `function_source` with fresh names.

    With probability `natural_name_share` the names are natural instead of made-up: half
    the time drawn from `name_pool` (real identifiers), half the time the function's own.
    """
    drop_doc = rng.random() < 0.7
    try:
        if name_pool and rng.random() < natural_name_share:
            if rng.random() < 0.5:
                code = randomize_names(function_source, rng, drop_doc, pool=name_pool)
            else:
                code = randomize_names(function_source, rng, drop_doc, pool=None, keep=True)
        else:
            code = randomize_names(function_source, rng, drop_docstring=drop_doc)
    except (SyntaxError, ValueError, RecursionError):
        return None
    names, weights = zip(*((k, w) for k, (_, w) in TASKS.items()), strict=True)
    kind = rng.choices(names, weights)[0]
    try:
        pair = TASKS[kind][0](code, rng)
    except (SyntaxError, ValueError, tokenize.TokenError, IndexError):
        return None
    if pair is None:
        return None
    messages = [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    if rng.random() < 0.6:
        messages.insert(0, {"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
    return render(messages)
