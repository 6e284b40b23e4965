"""The worker's Celery app: the one the web sends with (``app.core.broker``), with the task
modules loaded. ``celery -A worker.celery_app:celery_app worker`` runs it."""

from __future__ import annotations

from app.core.broker import celery_app
from worker.spec.tasks import (
    ANSWER_REVIEW_ITEMS,
    EVALUATE_MODELS,
    MAKE_EXPORT,
    SERVE_DEPLOYMENT,
    TRAIN_JOB,
)

celery_app.conf.include = [
    "worker.tasks.training",
    "worker.tasks.evaluation",
    "worker.tasks.review",
    "worker.tasks.deploy",
    "worker.tasks.upkeep",
    "worker.tasks.calibration",
]

__all__ = [
    "ANSWER_REVIEW_ITEMS",
    "EVALUATE_MODELS",
    "MAKE_EXPORT",
    "SERVE_DEPLOYMENT",
    "TRAIN_JOB",
    "celery_app",
]
