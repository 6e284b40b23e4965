"""Whether a training method can work with a model on this installation, asked before a job
is queued. Importable without torch: the web process calls it when a job is created and when
a method is chosen in the form; the engine asks the same question again before it loads
anything, so a job that slipped through still fails with the same sentence."""

from __future__ import annotations

import json
from pathlib import Path

from worker.spec.config import METHODS as CONFIG_METHODS
from worker.spec.methods import METHODS, MethodInfo


def check_method(method: str, *, model_type: str | None, cuda_available: bool) -> str | None:
    """Why ``method`` cannot train a model whose config.json says ``model_type`` on workers
    with (``cuda_available``) or without an NVIDIA GPU; None when it can, or when nothing
    is known against it (``model_type`` None: the model has not been looked at)."""
    info = METHODS.get(method)
    if info is None or method not in CONFIG_METHODS:
        return f"Unknown method '{method}'; choose one of: {', '.join(CONFIG_METHODS)}."
    return info.unsupported(model_type, cuda_available=cuda_available)


def method_choices() -> list[MethodInfo]:
    """Every method in the order the form lists them, with title and description."""
    return [METHODS[name] for name in CONFIG_METHODS]


def model_type_of(folder: Path) -> str | None:
    """``model_type`` from a model folder's config.json; None when it cannot be read."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    return model_type if isinstance(model_type, str) else None
