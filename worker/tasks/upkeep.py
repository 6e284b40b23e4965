"""What every worker does beside its work, on a thread of its own: reap the rows of workers
that stopped heart-beating, and, while idle, send again what waits on its queues without a
broker message. The conditional updates of ``app.services.leases`` let any number of workers
do this at once: exactly one wins each row."""

from __future__ import annotations

import logging
import socket
import threading
from datetime import timedelta
from typing import Any

from celery.signals import celeryd_after_setup, worker_ready, worker_shutting_down

from app.core.config import get_settings
from app.core.db import end_idle_transactions_after, session_scope, utcnow
from app.services import leases
from app.services import workers as registry
from app.services.queue import offer_all
from worker.tasks import runtime
from worker.tasks.capacity import cached_models, class_queues, detect
from worker.tasks.runtime import BUSY, worker_name

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


def register(queues: list[str]) -> None:
    """Advertise this worker: its capacity, the queues it consumes, its cached models."""
    settings = get_settings()
    name = worker_name()
    with session_scope() as session:
        registry.register(
            session,
            name=name,
            host=socket.gethostname(),
            capacity=detect(settings),
            queues=queues,
            models=cached_models(settings),
        )
        registry.forget_old(session)


def mark_seen(queues: list[str]) -> None:
    if runtime.SHUTTING_DOWN.is_set():  # stopped: it says so already
        return
    with session_scope() as session:
        known = registry.seen(session, name=worker_name())
    if not known:
        register(queues)


def run_upkeep(queues: list[str], stop: threading.Event, interval: float) -> None:
    while True:
        try:
            mark_seen(queues)
            reap()
            if not BUSY.is_set():
                sweep(queues)
        except Exception:  # the database or the broker may blink; the next round tries again
            log.exception("worker upkeep failed")
        if stop.wait(interval):
            return


@celeryd_after_setup.connect
def _add_class_queues(sender: Any = None, instance: Any = None, **_: Any) -> None:
    """Consume the queue of every capacity class this worker satisfies, beside the ones it
    was started with: the broker then hands it only jobs it can run."""
    settings = get_settings()
    for queue in class_queues(settings, detect(settings)):
        instance.app.amqp.queues.select_add(queue)


@celeryd_after_setup.connect
def _end_idle_transactions(**_: Any) -> None:
    """Before this worker touches the database, have Postgres end its transactions left idle
    past the lease (app.core.db.end_idle_transactions_after): a freeze mid-write cannot hold
    the row against the reaper."""
    seconds = get_settings().lease_seconds
    end_idle_transactions_after(seconds)
    log.info("transactions left idle %.0f s end (the lease)", seconds)


@worker_ready.connect
def _start_upkeep(sender: Any = None, **_: Any) -> None:
    settings = get_settings()
    queues = _consumed_queues(sender) or [settings.default_queue]
    runtime.QUEUES[:] = queues
    try:
        register(queues)
    except Exception:  # the upkeep registers it on its next round
        log.exception("could not register this worker")
    interval = max(
        1.0,
        min(
            settings.lease_seconds / 4,
            settings.reoffer_seconds / 2,
            settings.worker_offline_seconds / 4,
        ),
    )
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


@worker_shutting_down.connect
def _mark_stopped(**_: Any) -> None:
    # Celery sends this signal from its SIGTERM handler, which runs in the main thread
    # between two of its bytecodes, maybe in the middle of a database write of the task's.
    # Writing here as well waited on that write's own lock (SQLite's busy timeout, 30 s, more
    # than once) and held the shutdown up past serve's grace. So the row is written from a
    # thread of its own, waited for briefly; the worker shows offline once it is no longer
    # seen in any case.
    def mark() -> None:
        try:
            with session_scope() as session:
                registry.stopped(session, name=worker_name())
        except Exception:
            log.exception("could not mark this worker stopped")

    marker = threading.Thread(target=mark, name="mark-stopped", daemon=True)
    marker.start()
    marker.join(timeout=2)
