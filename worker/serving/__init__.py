"""The built-in model server: a base model and its adapters behind an OpenAI-compatible API.

Like ``worker.training`` it is a library: no database and no web settings, so it runs on a
bare GPU host (``python -m worker.serving``) as well as behind tunelab's web process.
"""

from worker.serving.engine import (
    Completion,
    Delta,
    EngineClosed,
    InvalidRequest,
    SamplingParams,
    ServingEngine,
    UnknownModel,
)

__all__ = [
    "Completion",
    "Delta",
    "EngineClosed",
    "InvalidRequest",
    "SamplingParams",
    "ServingEngine",
    "UnknownModel",
]
