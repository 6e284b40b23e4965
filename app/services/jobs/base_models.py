"""The base-model rule (``worker.spec.model_names``) with this tunelab's allowed folders:
refused as a 422 naming the field where the web app and the API take a base model from a user,
and as a failed run on a worker (a job or evaluation made before the rule could hold one)."""

from __future__ import annotations

from pathlib import Path

from app.core.config import Settings, get_settings
from app.core.errors import InvalidInput
from worker.spec.errors import TrainingError
from worker.spec.model_names import REFUSED, base_model_kind, worker_may_load


def allowed_model_dirs(settings: Settings) -> list[Path]:
    """Where local base models may be: TUNELAB_MODEL_DIRS and the converted-model cache."""
    return [*settings.model_dirs, settings.model_cache_dir]


def check_base_model(
    name: str, *, field: str = "config.base_model", settings: Settings | None = None
) -> None:
    """Raise InvalidInput on ``field`` with the one message unless the rule accepts ``name``."""
    dirs = allowed_model_dirs(settings or get_settings())
    if base_model_kind(name, dirs) is None:
        raise InvalidInput.on(field, REFUSED)


def check_on_worker(name: str, settings: Settings) -> None:
    """Raise TrainingError with the same message unless a worker may load ``name``."""
    if not worker_may_load(name, allowed_model_dirs(settings)):
        raise TrainingError(f"base_model: {REFUSED}")
