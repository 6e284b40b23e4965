"""The Celery app. The web process uses it to send work by task name (``worker.spec.tasks``)
and never imports a task; the worker adds its task modules (``worker.celery_app``)."""

from __future__ import annotations

from celery import Celery

from app.core.config import get_settings


def make_celery() -> Celery:
    settings = get_settings()
    if settings.broker_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = Celery(
        "tunelab",
        broker=settings.celery_broker_url,
    )
    app.conf.update(
        # A training task runs for hours: take one message at a time and acknowledge it only
        # when the task returns, so a worker that dies hands its message back.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue=settings.default_queue,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    if settings.celery_broker_url.startswith(("redis://", "rediss://")):
        # Redis re-delivers an unacknowledged message after this long; the row's conditional
        # claim makes such a second delivery harmless. A broker that does not answer within
        # seconds is down: the request that made a row must not hang on it (the row waits
        # and is sent again by a worker's sweeper).
        app.conf.broker_transport_options = {
            "visibility_timeout": 12 * 3600,
            "socket_connect_timeout": 5,
            "socket_timeout": 30,
        }
    return app


celery_app = make_celery()
