"""How a worker holds one piece of queued work, whatever its kind.

``Lease`` claims a row, keeps it alive from a thread of its own (the work itself blocks the
main thread for long stretches: loading a model, one slow step), notices cancellation and a
lost lease, and makes every write the work does conditional on still holding it: a worker
that lost its lease (it froze past the lease, and another worker took over) writes nothing
more and stops at its next write. A worker that is asked to shut down hands its work back.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from celery.exceptions import Reject
from celery.signals import worker_shutting_down
from sqlalchemy.orm import Session

from app.core.config import get_settings
from app.core.db import session_scope
from app.services import leases
from app.services.leases import Kind
from app.services.queue import offer
from worker.spec.errors import TrainingCancelled

log = logging.getLogger(__name__)
T = TypeVar("T")

# Set when this worker process is asked to stop: the running work stops at its next step and
# is handed back to the queue at once, instead of waiting for its lease to expire.
SHUTTING_DOWN = threading.Event()
# Set while this process holds a lease: an idle worker is one that could take a message now.
BUSY = threading.Event()
# The queues this worker consumes (set when it is ready): a message wakes it for the first
# waiting job of any of them, in the fair order (app.services.leases.claim_next).
QUEUES: list[str] = []


@worker_shutting_down.connect
def _on_shutdown(**_: Any) -> None:
    SHUTTING_DOWN.set()


def worker_name() -> str:
    """The name this process's leases carry: TUNELAB_WORKER_NAME (else the host) and its pid."""
    return f"{get_settings().worker_name or socket.gethostname()}:{os.getpid()}"


class LeaseLost(TrainingCancelled):
    """Raised into the work when another worker holds its row now."""


class Lease:
    """One row held by this worker, from claim to finish (a context manager around the work).

    ``progress`` returns column values (an evaluation's progress) that each heartbeat stores.
    """

    def __init__(
        self,
        kind: Kind,
        item_id: uuid.UUID,
        *,
        progress: Callable[[], dict[str, Any] | None] | None = None,
    ) -> None:
        self.kind = kind
        self.item_id = item_id
        self.worker = worker_name()
        self.settings = get_settings()
        self.progress = progress
        self.named: uuid.UUID | None = None  # the row the message named, when another was taken
        self.lost = False
        self.cancel_requested = False
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def claim(self, session: Session) -> Any | None:
        """The claimed row (read what the work needs from it in this session), or None.

        A worker that is shutting down takes nothing new: the message goes back to the
        broker for the next worker (it may be the one this worker just handed back)."""
        if SHUTTING_DOWN.is_set():
            raise Reject("this worker is shutting down", requeue=True)
        row = leases.claim_next(
            session, self.kind, self.item_id, worker=self.worker, queues=list(QUEUES)
        )
        if row is not None and row.id != self.item_id:
            # The message woke this worker for the row that comes first; the one it named
            # keeps waiting and gets a message of its own once this claim is committed.
            self.named, self.item_id = self.item_id, row.id
        return row

    def __enter__(self) -> Lease:
        BUSY.set()
        self._thread = threading.Thread(
            target=self._beat, name=f"lease-{self.kind.name}-{self.item_id}", daemon=True
        )
        self._thread.start()
        if self.named is not None:
            self._offer_named()
        return self

    def _offer_named(self) -> None:
        assert self.named is not None
        try:
            with session_scope() as session:
                named = leases.still_waiting(session, self.kind, self.named)
                if named is not None:
                    offer(session, self.kind, named.item_id, named.queue)
        except Exception:  # the sweeper sends it again later
            log.exception("could not offer %s %s again", self.kind.name, self.named)

    def __exit__(self, *_: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        BUSY.clear()

    def should_stop(self) -> bool:
        return self._stop.is_set() or SHUTTING_DOWN.is_set()

    @property
    def shut_down(self) -> bool:
        """Stopped because this worker is stopping, not because anyone cancelled the work."""
        return SHUTTING_DOWN.is_set() and not self.cancel_requested and not self.lost

    @property
    def ended_elsewhere(self) -> bool:
        """This attempt's outcome is not to be recorded: another worker holds the row now, or
        this worker is stopping (and hands the row back)."""
        return self.lost or self.shut_down

    def give_up_or_hand_back(self) -> str | None:
        """After the work stopped: "lease lost" (another worker has it; nothing is written),
        "handed back" (this worker is stopping; the row is back in the queue), else None and
        the caller records the outcome."""
        if self.lost:
            return "lease lost"
        if self.shut_down:
            self.hand_back()
            return "handed back"
        return None

    def write(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in a transaction that first renews the lease; raise LeaseLost (and
        write nothing) when the row is no longer ours. The renewal locks the row until the
        transaction ends, so a reaper cannot take it between the check and the write."""
        with session_scope() as session:
            beat = leases.heartbeat(session, self.kind, self.item_id, worker=self.worker)
            if not beat.ours:
                self._lose()
                raise LeaseLost("another worker holds this work now")
            return work(session)

    def finish(
        self,
        status: str,
        *,
        error: str | None = None,
        values: dict[str, Any] | None = None,
        message: str | None = None,
        level: str = "info",
        then: Callable[[Session], None] | None = None,
    ) -> bool:
        """Record the outcome (and ``then`` in the same transaction) if the row is still
        ours; False, with nothing written, when it is not."""
        with session_scope() as session:
            ended = leases.finish(
                session,
                self.kind,
                self.item_id,
                worker=self.worker,
                status=status,
                error=error,
                values=values,
                message=message,
                level=level,
            )
            if not ended:
                session.rollback()
                self.lost = True
                return False
            if then is not None:
                then(session)
        return True

    def hand_back(self) -> None:
        """Give the row back to the queue (this worker is stopping) and offer it again."""
        with session_scope() as session:
            queue = leases.hand_back(session, self.kind, self.item_id, worker=self.worker)
            if queue is not None:
                session.commit()
                offer(session, self.kind, self.item_id, queue)

    def _lose(self) -> None:
        self.lost = True
        self._stop.set()

    def _beat(self) -> None:
        # Cancellation is looked at every second, so cancelled work stops within seconds; the
        # lease itself is renewed at the configured (slower) pace.
        since = self.settings.heartbeat_seconds
        while not self._done.wait(1.0):
            since += 1.0
            try:
                with session_scope() as session:
                    if since >= self.settings.heartbeat_seconds:
                        since = 0.0
                        values = self.progress() if self.progress is not None else None
                        beat = leases.heartbeat(
                            session, self.kind, self.item_id, worker=self.worker, values=values
                        )
                        if not beat.ours:
                            self._lose()
                        cancel = beat.cancel
                    else:
                        cancel = leases.cancel_asked(session, self.kind, self.item_id)
                if cancel:
                    self.cancel_requested = True
                    self._stop.set()
            except Exception:  # the database may blink; the next beat tries again
                log.exception("heartbeat for %s %s failed", self.kind.name, self.item_id)
