"""SyntheticBugs: small generated Python functions with one seeded bug each.

The CPU default's world, small enough for a tiny model to learn. Each problem is a
5-12 line function built from a template, with one bug of a known kind (wrong
operator, off-by-one, wrong comparison, wrong constant, wrong variable, missing
case), tests whose expected values come from the reference fix, and a templated
explanation that names the bug.

Three splits, held out at two levels:
- `train`: the training (template, bug kind) pairs, with everyday names (half) or made-up ones.
- `test`: the same pairs with every identifier a made-up word from the held-out half of
  the name space, which no training problem can contain, so a memorised name cannot pass:
  the model must read the function and fix it in place.
- `novel`: the (template, bug kind) pairs that training never sees (each template's
  `held_out` kind), also with held-out names: the fix must be inferred from the failing tests.

Generation is deterministic in (split, n, seed); expected values are computed by running
our own generated reference in-process (trusted code, never a model's).
"""

from __future__ import annotations

import builtins
import copy
import keyword
import random
import string
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from envs.problem import Problem
from envs.sources import register_source
from sandbox.types import TestCase

BUG_KINDS = (
    "wrong_operator",
    "off_by_one",
    "wrong_comparison",
    "wrong_constant",
    "wrong_variable",
    "missing_case",
)
SPLITS = ("train", "test", "novel")

# Placeholder -> naming role. Every identifier in a problem comes from its role's pool.
ROLE_OF = {
    "xs": "seq", "x": "elem", "acc": "acc", "i": "idx", "out": "lst", "s": "text",
    "c": "char", "w": "word", "t": "scalar", "k": "scalar", "v": "scalar",
    "lo": "scalar", "hi": "scalar", "a": "scalar", "b": "scalar",
}  # fmt: skip

# Everyday names for half the training problems (no Python keywords or builtins).
VOCAB: dict[str, dict[str, tuple[str, ...]]] = {
    "train": {
        "seq": ("items", "values", "nums", "data", "scores", "weights", "prices", "sizes", "marks", "costs"),
        "elem": ("item", "value", "num", "entry", "score", "point"),
        "scalar": ("limit", "bound", "cap", "target", "pivot", "level", "low", "high", "base", "edge"),
        "acc": ("total", "acc", "result", "count", "tally", "res"),
        "idx": ("i", "j", "k", "pos"),
        "lst": ("out", "kept", "picked", "found"),
        "text": ("text", "line", "phrase", "note"),
        "char": ("ch", "letter", "sym"),
        "word": ("word", "part", "chunk"),
        "verb": ("compute", "get", "find", "count", "collect", "scan", "pick", "tally"),
        "noun": ("values", "items", "scores", "marks", "points", "stats", "totals", "parts"),
    },
}  # fmt: skip


@dataclass(frozen=True)
class Bug:
    kind: str
    old: str  # a substring of the template source (occurs exactly once)
    new: str
    explanation: str  # names the bug; formatted with the problem's identifiers


@dataclass(frozen=True)
class FunctionTemplate:
    name: str
    source: str  # `{f}` is the function name; other fields are ROLE_OF placeholders
    description: str
    inputs: Callable[[random.Random], list[tuple]]  # argument tuples (edge cases first)
    bugs: tuple[Bug, ...]
    held_out: str  # the bug kind reserved for the test split

    def placeholders(self) -> list[str]:
        return sorted({f for _, f, _, _ in string.Formatter().parse(self.source) if f})


def _ints(rng: random.Random, lo: int = -5, hi: int = 12, n: tuple[int, int] = (1, 7)) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(rng.randint(*n))]


def _lists_with_scalar(edges: list[tuple], lo: int, hi: int, tlo: int, thi: int):
    def gen(rng: random.Random) -> list[tuple]:
        out = list(edges)
        for _ in range(6):
            xs = _ints(rng, lo, hi)
            t = rng.choice(xs) if rng.random() < 0.5 else rng.randint(tlo, thi)
            out.append((xs, t))
        return out

    return gen


def _lists(edges: list[tuple], lo: int = -5, hi: int = 12):
    def gen(rng: random.Random) -> list[tuple]:
        return list(edges) + [(_ints(rng, lo, hi),) for _ in range(6)]

    return gen


_WORDS = ("Apple", "tree", "queue", "sky", "Ocean", "bUg", "idea", "rhythm", "Unit", "loop", "AI")


def _texts(rng: random.Random) -> list[tuple]:
    out: list[tuple] = [("",), ("Umbrella under",)]
    out += [(" ".join(rng.sample(_WORDS, rng.randint(1, 4))),) for _ in range(5)]
    return out


def _texts_with_len(rng: random.Random) -> list[tuple]:
    out: list[tuple] = [("", 2), ("abc de fghi", 3)]
    out += [(" ".join(rng.sample(_WORDS, rng.randint(1, 5))), rng.randint(2, 5)) for _ in range(5)]
    return out


def _clamps(rng: random.Random) -> list[tuple]:
    lo = rng.randint(-5, 5)
    hi = lo + rng.randint(2, 8)
    return [(lo - 3, lo, hi), (hi + 2, lo, hi), (lo, lo, hi), (hi, lo, hi)] + [
        (rng.randint(lo - 6, hi + 6), lo, hi) for _ in range(4)
    ]


def _ranges(rng: random.Random) -> list[tuple]:
    out: list[tuple] = [(3, 3), (5, 2)]
    for _ in range(5):
        a = rng.randint(-4, 6)
        out.append((a, a + rng.randint(1, 7)))
    return out


def _signs(rng: random.Random) -> list[tuple]:
    return [(0,), (-1,), (1,)] + [(rng.choice([-1, 1]) * rng.randint(2, 50),) for _ in range(4)]


TEMPLATES: tuple[FunctionTemplate, ...] = (
    FunctionTemplate(
        "sum_above",
        "def {f}({xs}, {t}):\n    {acc} = 0\n    for {x} in {xs}:\n        if {x} > {t}:\n"
        "            {acc} += {x}\n    return {acc}\n",
        "Write a function `{f}({xs}, {t})` that returns the sum of the numbers in the list "
        "`{xs}` that are strictly greater than `{t}`.",
        _lists_with_scalar([([], 0), ([2, 5, 5, 7], 5)], -5, 12, -2, 6),
        (
            Bug("wrong_comparison", "if {x} > {t}:", "if {x} >= {t}:",
                "The comparison `{x} >= {t}` also adds elements equal to `{t}`; only strictly "
                "greater ones count, so it must be `{x} > {t}`."),
            Bug("wrong_operator", "{acc} += {x}", "{acc} -= {x}",
                "`{acc} -= {x}` subtracts the matching elements instead of adding them; it must "
                "be `{acc} += {x}`."),
            Bug("wrong_constant", "{acc} = 0", "{acc} = 1",
                "The sum starts at 1 instead of 0: `{acc} = 1` adds one to every result."),
            Bug("wrong_variable", "{acc} += {x}", "{acc} += {t}",
                "`{acc} += {t}` adds the threshold instead of the element; it must add `{x}`."),
        ),
        held_out="wrong_constant",
    ),
    FunctionTemplate(
        "count_multiples",
        "def {f}({xs}, {k}):\n    {acc} = 0\n    for {x} in {xs}:\n        if {x} % {k} == 0:\n"
        "            {acc} += 1\n    return {acc}\n",
        "Write a function `{f}({xs}, {k})` that returns how many numbers in the list `{xs}` "
        "are divisible by `{k}`.",
        lambda rng: [([], 3), ([0, 4, 6], 2)] + [(_ints(rng, 0, 20), rng.randint(2, 5)) for _ in range(6)],
        (
            Bug("wrong_comparison", "{x} % {k} == 0", "{x} % {k} != 0",
                "The test `{x} % {k} != 0` counts the numbers that are not divisible by `{k}`; "
                "it must be `{x} % {k} == 0`."),
            Bug("wrong_constant", "{acc} += 1", "{acc} += 2",
                "Each match adds 2 (`{acc} += 2`) instead of 1, so the count is doubled."),
            Bug("wrong_variable", "{x} % {k} == 0", "{k} % {x} == 0",
                "The operands are swapped: `{k} % {x}` tests whether `{k}` is divisible by the "
                "element; it must be `{x} % {k}`."),
            Bug("wrong_operator", "{x} % {k} == 0", "{x} // {k} == 0",
                "`{x} // {k}` is integer division; divisibility needs the remainder `{x} % {k}`."),
        ),
        held_out="wrong_comparison",
    ),
    FunctionTemplate(
        "largest",
        "def {f}({xs}):\n    if not {xs}:\n        return None\n    {acc} = {xs}[0]\n"
        "    for {i} in range(1, len({xs})):\n        if {xs}[{i}] > {acc}:\n"
        "            {acc} = {xs}[{i}]\n    return {acc}\n",
        "Write a function `{f}({xs})` that returns the largest number in the list `{xs}`, "
        "or None if the list is empty.",
        _lists([([],), ([1, 3, 9],), ([4, -2, 1],)]),
        (
            Bug("off_by_one", "range(1, len({xs}))", "range(1, len({xs}) - 1)",
                "The loop stops one element early: `range(1, len({xs}) - 1)` never looks at the "
                "last element; it must be `range(1, len({xs}))`."),
            Bug("wrong_comparison", "if {xs}[{i}] > {acc}:", "if {xs}[{i}] < {acc}:",
                "The comparison is reversed: `{xs}[{i}] < {acc}` keeps the smallest element; it "
                "must be `{xs}[{i}] > {acc}`."),
            Bug("missing_case", "    if not {xs}:\n        return None\n", "",
                "The empty list is not handled: `{xs}[0]` raises IndexError; return None when "
                "`{xs}` is empty."),
            Bug("wrong_variable", "{acc} = {xs}[{i}]", "{acc} = {i}",
                "`{acc} = {i}` stores the index instead of the element; it must be "
                "`{acc} = {xs}[{i}]`."),
        ),
        held_out="off_by_one",
    ),
    FunctionTemplate(
        "clamp",
        "def {f}({v}, {lo}, {hi}):\n    if {v} < {lo}:\n        return {lo}\n"
        "    if {v} > {hi}:\n        return {hi}\n    return {v}\n",
        "Write a function `{f}({v}, {lo}, {hi})` that limits `{v}` to the range from `{lo}` to "
        "`{hi}`: it returns `{lo}` if `{v}` is below it, `{hi}` if `{v}` is above it, else `{v}`.",
        _clamps,
        (
            Bug("wrong_variable", "return {hi}", "return {lo}",
                "When `{v}` is above the range the code returns `{lo}`; it must return `{hi}`."),
            Bug("wrong_comparison", "if {v} > {hi}:", "if {v} < {hi}:",
                "The upper check `{v} < {hi}` is reversed; values above `{hi}` are caught by "
                "`{v} > {hi}`."),
            Bug("missing_case", "    if {v} < {lo}:\n        return {lo}\n", "",
                "Values below `{lo}` are not handled; add `if {v} < {lo}: return {lo}`."),
        ),
        held_out="missing_case",
    ),
    FunctionTemplate(
        "keep_at_most",
        "def {f}({xs}, {t}):\n    {out} = []\n    for {x} in {xs}:\n        if {x} <= {t}:\n"
        "            {out}.append({x})\n    return {out}\n",
        "Write a function `{f}({xs}, {t})` that returns the numbers of the list `{xs}` that are "
        "at most `{t}`, in their original order.",
        _lists_with_scalar([([], 1), ([1, 3, 3, 8], 3), ([0, 9], 4)], -5, 12, -2, 8),
        (
            Bug("wrong_comparison", "if {x} <= {t}:", "if {x} < {t}:",
                "`{x} < {t}` drops the elements equal to `{t}`; 'at most' needs `{x} <= {t}`."),
            Bug("wrong_variable", "{out}.append({x})", "{out}.append({t})",
                "`{out}.append({t})` appends the limit instead of the element `{x}`."),
            Bug("off_by_one", "for {x} in {xs}:", "for {x} in {xs}[1:]:",
                "The loop starts at the second element: `{xs}[1:]` skips the first one; it must "
                "loop over all of `{xs}`."),
        ),
        held_out="wrong_variable",
    ),
    FunctionTemplate(
        "count_vowels",
        "def {f}({s}):\n    {acc} = 0\n    for {c} in {s}.lower():\n"
        '        if {c} in "aeiou":\n            {acc} += 1\n    return {acc}\n',
        "Write a function `{f}({s})` that returns the number of vowels (a, e, i, o, u, in upper "
        "or lower case) in the string `{s}`.",
        _texts,
        (
            Bug("wrong_constant", '"aeiou"', '"aeio"',
                'The vowel string "aeio" misses "u", so the letter u is never counted; it must '
                'be "aeiou".'),
            Bug("missing_case", "{s}.lower()", "{s}",
                "Upper-case vowels are not counted: the loop must run over `{s}.lower()`."),
            Bug("wrong_comparison", 'if {c} in "aeiou":', 'if {c} not in "aeiou":',
                "`not in` counts every character that is not a vowel; it must be `in`."),
        ),
        held_out="wrong_constant",
    ),
    FunctionTemplate(
        "running_totals",
        "def {f}({xs}):\n    {out} = []\n    {acc} = 0\n    for {x} in {xs}:\n"
        "        {acc} += {x}\n        {out}.append({acc})\n    return {out}\n",
        "Write a function `{f}({xs})` that returns the running totals of the list `{xs}`: item "
        "i of the result is the sum of the first i + 1 numbers.",
        _lists([([],), ([1, 2, 3],), ([5, 0, -2],)]),
        (
            Bug("wrong_variable", "{out}.append({acc})", "{out}.append({x})",
                "`{out}.append({x})` stores the element instead of the running total `{acc}`."),
            Bug("wrong_operator", "{acc} += {x}", "{acc} *= {x}",
                "`{acc} *= {x}` multiplies; a running total adds: `{acc} += {x}`."),
            Bug("wrong_constant", "{acc} = 0", "{acc} = 1",
                "The total starts at 1 instead of 0 (`{acc} = 1`), so every item is one too "
                "large."),
        ),
        held_out="wrong_operator",
    ),
    FunctionTemplate(
        "first_index_above",
        "def {f}({xs}, {t}):\n    for {i} in range(len({xs})):\n        if {xs}[{i}] > {t}:\n"
        "            return {i}\n    return -1\n",
        "Write a function `{f}({xs}, {t})` that returns the index of the first number in the "
        "list `{xs}` that is greater than `{t}`, or -1 if there is none.",
        _lists_with_scalar([([], 0), ([1, 2, 9], 5), ([3, 1], 9), ([4, 7], 4)], -5, 12, -2, 8),
        (
            Bug("off_by_one", "range(len({xs}))", "range(len({xs}) - 1)",
                "The loop stops one element early: `range(len({xs}) - 1)` skips the last item."),
            Bug("wrong_constant", "return -1", "return 0",
                "When no element is greater than `{t}` the code returns 0, a valid index; it "
                "must return -1."),
            Bug("wrong_variable", "return {i}", "return {xs}[{i}]",
                "`return {xs}[{i}]` returns the element; the task asks for its index `{i}`."),
            Bug("wrong_comparison", "if {xs}[{i}] > {t}:", "if {xs}[{i}] >= {t}:",
                "`{xs}[{i}] >= {t}` also accepts elements equal to `{t}`; it must be "
                "`{xs}[{i}] > {t}`."),
        ),
        held_out="wrong_variable",
    ),
    FunctionTemplate(
        "sum_between",
        "def {f}({a}, {b}):\n    {acc} = 0\n    for {i} in range({a}, {b} + 1):\n"
        "        {acc} += {i}\n    return {acc}\n",
        "Write a function `{f}({a}, {b})` that returns the sum of all integers from `{a}` to "
        "`{b}`, both included (0 if `{a}` is greater than `{b}`).",
        _ranges,
        (
            Bug("off_by_one", "range({a}, {b} + 1)", "range({a}, {b})",
                "`range({a}, {b})` excludes `{b}`; the upper bound must be `{b} + 1`."),
            Bug("wrong_variable", "{acc} += {i}", "{acc} += {a}",
                "`{acc} += {a}` adds the start value every time instead of `{i}`."),
            Bug("wrong_operator", "{acc} += {i}", "{acc} -= {i}",
                "`{acc} -= {i}` subtracts each integer; the sum needs `{acc} += {i}`."),
            Bug("wrong_constant", "{acc} = 0", "{acc} = 1",
                "The sum starts at 1 instead of 0: `{acc} = 1` adds one to every result."),
        ),
        held_out="off_by_one",
    ),
    FunctionTemplate(
        "sign",
        "def {f}({v}):\n    if {v} < 0:\n        return -1\n    if {v} == 0:\n"
        "        return 0\n    return 1\n",
        "Write a function `{f}({v})` that returns -1 if `{v}` is negative, 0 if it is zero and "
        "1 if it is positive.",
        _signs,
        (
            Bug("missing_case", "    if {v} == 0:\n        return 0\n", "",
                "Zero is not handled: it falls through and returns 1; add "
                "`if {v} == 0: return 0`."),
            Bug("wrong_comparison", "if {v} < 0:", "if {v} <= 0:",
                "`{v} <= 0` also catches zero and returns -1; negative means `{v} < 0`."),
            Bug("wrong_constant", "return -1", "return 1",
                "Negative values return 1 instead of -1."),
        ),
        held_out="missing_case",
    ),
    FunctionTemplate(
        "count_long_words",
        "def {f}({s}, {t}):\n    {acc} = 0\n    for {w} in {s}.split():\n"
        "        if len({w}) > {t}:\n            {acc} += 1\n    return {acc}\n",
        "Write a function `{f}({s}, {t})` that returns how many words (separated by whitespace) "
        "of the string `{s}` are longer than `{t}` characters.",
        _texts_with_len,
        (
            Bug("wrong_comparison", "len({w}) > {t}", "len({w}) >= {t}",
                "`len({w}) >= {t}` also counts words of exactly `{t}` characters; it must be "
                "`len({w}) > {t}`."),
            Bug("wrong_variable", "len({w}) > {t}", "len({s}) > {t}",
                "`len({s})` measures the whole string, not the word `{w}`."),
            Bug("wrong_operator", "{acc} += 1", "{acc} -= 1",
                "`{acc} -= 1` decrements the counter; it must be `{acc} += 1`."),
        ),
        held_out="wrong_comparison",
    ),
    FunctionTemplate(
        "product",
        "def {f}({xs}):\n    {acc} = 1\n    for {x} in {xs}:\n        {acc} *= {x}\n"
        "    return {acc}\n",
        "Write a function `{f}({xs})` that returns the product of the numbers in the list "
        "`{xs}` (1 for an empty list).",
        _lists([([],), ([2, 3, 4],), ([5],)], lo=-4, hi=6),
        (
            Bug("wrong_constant", "{acc} = 1", "{acc} = 0",
                "The product starts at 0 (`{acc} = 0`), so it is always 0; it must start at 1."),
            Bug("wrong_operator", "{acc} *= {x}", "{acc} += {x}",
                "`{acc} += {x}` adds the elements; a product needs `{acc} *= {x}`."),
            Bug("off_by_one", "for {x} in {xs}:", "for {x} in {xs}[:-1]:",
                "The loop skips the last element: `{xs}[:-1]` must be `{xs}`."),
        ),
        held_out="wrong_operator",
    ),
    FunctionTemplate(
        "smallest",
        "def {f}({xs}):\n    if len({xs}) == 0:\n        return 0\n    {acc} = {xs}[0]\n"
        "    for {x} in {xs}:\n        if {x} < {acc}:\n            {acc} = {x}\n    return {acc}\n",
        "Write a function `{f}({xs})` that returns the smallest number in the list `{xs}`, or 0 "
        "if the list is empty.",
        _lists([([],), ([4, 2, 8],), ([3, 5, 1],)]),
        (
            Bug("wrong_comparison", "if {x} < {acc}:", "if {x} > {acc}:",
                "The comparison is reversed: `{x} > {acc}` keeps the largest element; it must be "
                "`{x} < {acc}`."),
            Bug("wrong_variable", "return {acc}", "return {x}",
                "`return {x}` returns the last element seen by the loop instead of the smallest "
                "one, `{acc}`."),
            Bug("missing_case", "    if len({xs}) == 0:\n        return 0\n", "",
                "The empty list is not handled: `{xs}[0]` raises IndexError; return 0 when "
                "`{xs}` is empty."),
            Bug("wrong_constant", "return 0", "return -1",
                "For an empty list the code returns -1; it must return 0."),
        ),
        held_out="wrong_variable",
    ),
    FunctionTemplate(
        "capitalize_words",
        "def {f}({s}):\n    {out} = []\n    for {w} in {s}.split():\n"
        "        {out}.append({w}[0].upper() + {w}[1:])\n    return \" \".join({out})\n",
        "Write a function `{f}({s})` that returns the words of the string `{s}` with the first "
        "letter of each in upper case, joined by single spaces.",
        _texts,
        (
            Bug("off_by_one", "{w}[1:]", "{w}[2:]",
                "`{w}[2:]` drops the second letter of every word; the rest of the word is "
                "`{w}[1:]`."),
            Bug("wrong_constant", '" ".join', '"".join',
                'The words are joined with "", so the spaces disappear; join them with " ".'),
            Bug("wrong_variable", "{w}[0].upper()", "{s}[0].upper()",
                "`{s}[0]` is the first letter of the whole string, not of the word `{w}`."),
        ),
        held_out="wrong_constant",
    ),
)  # fmt: skip


def split_pairs(split: str) -> list[tuple[FunctionTemplate, Bug]]:
    """The (template, bug) pairs of a split: each template's `held_out` kind is novel-only."""
    if split not in SPLITS:
        raise ValueError(f"synthetic split must be one of {SPLITS}, got {split!r}")
    want_novel = split == "novel"
    return [(t, b) for t in TEMPLATES for b in t.bugs if (b.kind == t.held_out) == want_novel]


# Half the training problems use everyday words from VOCAB, half made-up words: with a
# small fixed vocabulary alone a model can memorise names instead of reading them.
# Held-out problems use made-up words too, from the same syllables (so their tokens are
# familiar), split from training's by a hash of the name (as in hash-based dataset splits),
# so no held-out name can equal a training one.
MADE_UP_NAME_SHARE = 0.5
_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "pl", "st", "tr")  # fmt: skip
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou")
_VOCAB_WORDS = {w for words in VOCAB["train"].values() for w in words}


def name_split(name: str) -> str:
    """The split a made-up name belongs to: "train" or "held_out" (a stable hash)."""
    return "train" if zlib.crc32(name.encode()) % 2 == 0 else "held_out"


def made_up_name(rng: random.Random, taken: set[str], split: str) -> str:
    """A fresh pronounceable identifier (1-2 words of 1-2 syllables) of `split`'s half."""
    while True:
        words = [
            "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(rng.randint(1, 2)))
            for _ in range(rng.choice((1, 1, 2)))
        ]
        name = "_".join(words)
        reserved = keyword.iskeyword(name) or hasattr(builtins, name) or name in _VOCAB_WORDS
        if name not in taken and not reserved and name_split(name) == split:
            return name


def _names(rng: random.Random, template: FunctionTemplate, split: str) -> dict[str, str]:
    if split != "train" or rng.random() < MADE_UP_NAME_SHARE:
        half = "train" if split == "train" else "held_out"
        made_up: dict[str, str] = {}
        for p in template.placeholders():
            made_up[p] = made_up_name(rng, set(made_up.values()), half)
        return made_up
    vocab = VOCAB["train"]
    pools = {role: rng.sample(words, len(words)) for role, words in vocab.items()}
    names = {p: pools[ROLE_OF[p]].pop() for p in template.placeholders() if p != "f"}
    names["f"] = f"{rng.choice(vocab['verb'])}_{rng.choice(vocab['noun'])}"
    return names


def _run(code: str, entry_point: str, args: tuple) -> tuple[bool, Any]:
    """Call our own generated function in-process: (ok, value or exception type)."""
    ns: dict[str, Any] = {}
    exec(compile(code, "<synthetic>", "exec"), ns)
    try:
        return True, ns[entry_point](*copy.deepcopy(args))
    except Exception as exc:  # a seeded bug may raise (e.g. IndexError): a failed test
        return False, type(exc).__name__


def _tests(reference: str, buggy: str, f: str, inputs: list[tuple]) -> list[TestCase] | None:
    """Tests from the reference's outputs, or None if the bug survives all of them."""
    tests, seen, caught = [], set(), False
    for args in inputs:
        expr = f"{f}({', '.join(repr(a) for a in args)})"
        if expr in seen:
            continue
        seen.add(expr)
        ok, expected = _run(reference, f, args)
        assert ok, f"reference of {f} failed on {args}: {expected}"
        caught = caught or _run(buggy, f, args) != (True, expected)
        tests.append(
            TestCase(expr=expr, expected=expected, display=f"assert {expr} == {expected!r}")
        )
    return tests if caught else None


def _make(rng: random.Random, template: FunctionTemplate, bug: Bug, split: str):
    names = _names(rng, template, split)
    if template.source.count(bug.old) != 1:
        raise AssertionError(f"{template.name}/{bug.kind}: {bug.old!r} must occur exactly once")
    reference = template.source.format(**names)
    buggy = template.source.replace(bug.old, bug.new).format(**names)
    for _ in range(8):
        tests = _tests(reference, buggy, names["f"], template.inputs(rng))
        if tests:
            return names, reference, buggy, tests
    raise AssertionError(f"{template.name}/{bug.kind}: no input tells the bug apart")


def _prompt(template: FunctionTemplate, names: dict[str, str], tests: list[TestCase]) -> str:
    example = next((t for t in tests if "[]" not in t.expr and "''" not in t.expr), tests[0])
    return f"{template.description.format(**names)}\nFor example:\n{example.display}"


def generate(split: str = "train", n: int = 200, seed: int = 0) -> list[Problem]:
    """`n` SyntheticBugs problems of `split`, deterministic in (split, n, seed)."""
    pairs = split_pairs(split)
    problems = []
    for index in range(n):
        rng = random.Random(f"synthetic:{seed}:{split}:{index}")
        template, bug = rng.choice(pairs)
        names, reference, buggy, tests = _make(rng, template, bug, split)
        problems.append(
            Problem(
                task_id=f"synthetic/{split}/{seed}/{index}",
                prompt=_prompt(template, names, tests),
                entry_point=names["f"],
                tests=tests,
                source="synthetic",
                reference=reference,
                metadata={
                    "initial_code": buggy,
                    "reference_fixes": [reference],
                    "reference_explanations": [bug.explanation.format(**names)],
                    "template": template.name,
                    "bug_kind": bug.kind,
                    "split": split,
                    "names": names,
                },
            )
        )
    return problems


@register_source("synthetic")
def load_synthetic(split: str | None = None, n: int = 200, seed: int = 0) -> list[Problem]:
    """`load_problems("synthetic:train", n=..., seed=...)`; split defaults to train."""
    return generate(split or "train", n=int(n), seed=int(seed))
