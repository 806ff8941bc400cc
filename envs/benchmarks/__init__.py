"""Benchmark problem sources: HumanEval, HumanEval+, MBPP, MBPP sanitized, MBPP+,
HumanEvalFix and the generic JSONL format. Importing this package registers them with
`envs.sources`."""

from envs.benchmarks import humaneval, humanevalfix, mbpp  # noqa: F401  (registers the sources)
from envs.benchmarks.generic import GenericFormatError, load_generic_jsonl

BENCHMARKS = ("humaneval", "humaneval+", "mbpp", "mbpp_sanitized", "mbpp+", "humanevalfix")

__all__ = ["BENCHMARKS", "GenericFormatError", "load_generic_jsonl"]
