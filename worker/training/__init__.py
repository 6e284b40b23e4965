"""The training engine as a library: config in, adapter folder and callbacks out.

Importing this package does not import torch: the torch-backed names below are imported on
first use, so a caller that only needs the config or the errors (re-exported from
``worker.spec``) stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from worker.spec.config import TrainConfig
from worker.spec.errors import TrainingCancelled, TrainingError

if TYPE_CHECKING:
    from worker.training.engine import StepMetrics, TrainCallbacks, TrainResult, train
    from worker.training.models import CATALOG, ResolvedModel, resolve_model

_LAZY = {
    "StepMetrics": "worker.training.engine",
    "TrainCallbacks": "worker.training.engine",
    "TrainResult": "worker.training.engine",
    "train": "worker.training.engine",
    "CATALOG": "worker.training.models",
    "ResolvedModel": "worker.training.models",
    "resolve_model": "worker.training.models",
}

__all__ = [
    "CATALOG",
    "ResolvedModel",
    "StepMetrics",
    "TrainCallbacks",
    "TrainConfig",
    "TrainResult",
    "TrainingCancelled",
    "TrainingError",
    "resolve_model",
    "train",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
