"""Benchmark evaluation: pass@k and sandboxed scoring of model samples."""

from actorlearner.evaluation.evaluate import candidate_code, evaluate_samples
from actorlearner.evaluation.matching import SampleMismatchError, match_samples
from actorlearner.evaluation.passk import mean_pass_at_k, pass_at_k
from actorlearner.evaluation.samples import SampleFormatError, read_samples

__all__ = [
    "SampleFormatError",
    "SampleMismatchError",
    "candidate_code",
    "evaluate_samples",
    "match_samples",
    "mean_pass_at_k",
    "pass_at_k",
    "read_samples",
]
