"""What every worker does beside its work, on a thread of its own: reap the rows of workers
that stopped heart-beating, and, while idle, send again what waits on its queues without a
broker message. The conditional updates of ``app.services.leases`` let any number of workers
do this at once: exactly one wins each row."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Any

from celery.signals import worker_ready

from app.core.config import get_settings
from app.core.db import session_scope, utcnow
from app.services import leases
from app.services.queue import offer_all
from worker.tasks.runtime import BUSY

log = logging.getLogger(__name__)


def reap() -> int:
    """Re-queue (or end) the rows of lost workers and offer the re-queued ones; how many."""
    settings = get_settings()
    with session_scope() as session:
        offers = leases.reap(session, lease_seconds=settings.lease_seconds)
        session.commit()
        return offer_all(session, offers)


def sweep(queues: list[str]) -> int:
    """Offer again what waits on ``queues`` with no message in the broker. Called only while
    this worker is idle: an idle worker of a queue would have been handed any message the
    broker still had for it, so a row that waits past the grace period has none."""
    settings = get_settings()
    cutoff = utcnow() - timedelta(seconds=settings.reoffer_seconds)
    with session_scope() as session:
        offers = leases.waiting_unoffered(session, queues=queues, offered_before=cutoff)
        return offer_all(session, offers)


def run_upkeep(queues: list[str], stop: threading.Event, interval: float) -> None:
    while True:
        try:
            reap()
            if not BUSY.is_set():
                sweep(queues)
        except Exception:  # the database or the broker may blink; the next round tries again
            log.exception("worker upkeep failed")
        if stop.wait(interval):
            return


@worker_ready.connect
def _start_upkeep(sender: Any = None, **_: Any) -> None:
    settings = get_settings()
    queues = _consumed_queues(sender) or [settings.default_queue]
    interval = max(1.0, min(settings.lease_seconds / 4, settings.reoffer_seconds / 2))
    threading.Thread(
        target=run_upkeep,
        args=(queues, threading.Event(), interval),
        name="upkeep",
        daemon=True,
    ).start()


def _consumed_queues(consumer: Any) -> list[str]:
    try:
        return [q.name for q in consumer.task_consumer.queues]
    except AttributeError:
        return []
