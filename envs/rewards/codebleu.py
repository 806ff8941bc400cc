"""CodeBLEU through the `codebleu` package, max over several references."""

from __future__ import annotations

import logging
from collections.abc import Sequence

_DATAFLOW_WARNING = "There is no reference data-flows"


class _DropDataflowWarning(logging.Filter):
    """codebleu logs a warning on the root logger for every reference without data
    flow (common for one-line fixes); in an RL loop that floods the logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _DATAFLOW_WARNING not in record.getMessage()


_FILTER = _DropDataflowWarning()


def max_codebleu(
    code: str,
    references: tuple[str, ...] | list[str],
    weights: Sequence[float] = (0.25, 0.25, 0.25, 0.25),
) -> float:
    """max over references r of calc_codebleu([r], [code], lang="python")["codebleu"]."""
    from codebleu import calc_codebleu

    if len(weights) != 4:
        raise ValueError(
            f"codebleu weights must be 4 numbers (ngram, weighted, syntax, dataflow), got {weights}"
        )
    a, b, c, d = (float(x) for x in weights)

    root = logging.getLogger()
    root.addFilter(_FILTER)
    try:
        scores = [
            calc_codebleu([ref], [code], lang="python", weights=(a, b, c, d))["codebleu"]
            for ref in references
            if ref.strip()
        ]
    finally:
        root.removeFilter(_FILTER)
    return float(max(scores, default=0.0))
