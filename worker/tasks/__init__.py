"""Celery tasks: thin wrappers that load rows, call the engine or a service, record results."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def crashed(what: str, exc: BaseException) -> str:
    """Log an unexpected failure with its traceback; the sentence stored for the person."""
    log.error("%s crashed", what, exc_info=exc)
    return f"internal error in the worker ({type(exc).__name__}: {exc})"
