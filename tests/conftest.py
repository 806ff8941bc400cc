"""Shared fixtures: real components, tiny sizes."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A random tiny Llama with a locally trained BPE tokenizer and the project's chat template."""
    from actorlearner.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_model"))
