"""Handing job ids to the queue. Only ids travel: the job row holds everything else."""

from __future__ import annotations

import uuid

from worker.celery_app import (
    ANSWER_REVIEW_ITEMS,
    EVALUATE_MODELS,
    MAKE_EXPORT,
    SERVE_DEPLOYMENT,
    TRAIN_JOB,
    celery_app,
)


def enqueue_training(*, job_id: uuid.UUID, queue: str) -> None:
    """Send the job to its queue; call only after the job row is committed."""
    celery_app.send_task(TRAIN_JOB, args=[str(job_id)], queue=queue)


def enqueue_evaluation(*, evaluation_id: uuid.UUID, queue: str) -> None:
    """Send the evaluation to its queue; call only after its row is committed."""
    celery_app.send_task(EVALUATE_MODELS, args=[str(evaluation_id)], queue=queue)


def enqueue_review_answers(*, campaign_id: uuid.UUID, queue: str | None = None) -> None:
    """Ask a worker to answer a campaign's typed prompts with both of its models."""
    celery_app.send_task(ANSWER_REVIEW_ITEMS, args=[str(campaign_id)], queue=queue)


def enqueue_export(*, export_id: uuid.UUID, queue: str) -> None:
    celery_app.send_task(MAKE_EXPORT, args=[str(export_id)], queue=queue)


def enqueue_deployment(*, deployment_id: uuid.UUID, queue: str) -> None:
    celery_app.send_task(SERVE_DEPLOYMENT, args=[str(deployment_id)], queue=queue)
