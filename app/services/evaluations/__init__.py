"""Evaluations: which models answer which held-out prompts, and their results.

An evaluation row holds the lease of ``app.services.leases`` like every queued work. Its
samples are written in the same transaction that marks it succeeded, so a reader sees either
no samples or all of them. ``creation`` makes them, ``candidates`` says what a model to
evaluate is, ``reports`` reads them back, ``samples`` holds their answers and ``export``
turns one into a download.
"""

from app.services.evaluations.candidates import (
    BASELINE_KEY,
    CHECKPOINT_NAME,
    checkpoint_folder,
    list_checkpoints,
    method_title,
)
from app.services.evaluations.creation import (
    DEFAULT_PRIMARY,
    KNOWN_METRICS,
    cancel_evaluation,
    create_evaluation,
    evaluation_after_job,
    offer,
    primary_metric,
)
from app.services.evaluations.reports import evaluation_read, list_evaluations, project_report
from app.services.evaluations.samples import (
    SHOW,
    all_samples,
    list_samples,
    search_text,
    store_samples,
)

__all__ = [
    "BASELINE_KEY",
    "CHECKPOINT_NAME",
    "DEFAULT_PRIMARY",
    "KNOWN_METRICS",
    "SHOW",
    "all_samples",
    "cancel_evaluation",
    "checkpoint_folder",
    "create_evaluation",
    "evaluation_after_job",
    "evaluation_read",
    "list_checkpoints",
    "list_evaluations",
    "list_samples",
    "method_title",
    "offer",
    "primary_metric",
    "project_report",
    "search_text",
    "store_samples",
]
