"""The one lease of every kind of queued work: claim, heartbeat, hand back, finish, reap, and
find what waits without a broker message.

Each kind (jobs, evaluations, exports, deployments, review answering) is a table with the
``Leased`` columns and a ``status``; its ``Kind`` says which statuses mean waiting and held,
how many attempts it gets, what a re-queue clears and who hears about changes. Every change is
a conditional UPDATE on the row, so two workers (or a worker and the reaper) can never both
win, and a worker that lost its lease finds its writes refused.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select, update
from sqlalchemy.orm import Session, aliased

from app.core.db import utcnow
from app.models import Deployment, Evaluation, Export, Job, ReviewAnswerRun
from app.models.lease import Leased

# A note for the people watching the work (a job's events); (session, id, level, message).
Note = Callable[[Session, uuid.UUID, str, str], None]


@dataclass(frozen=True)
class Kind:
    """How one kind of work moves through its lease."""

    name: str
    model: type[Leased]
    task: str  # the Celery task that works on it, given the row's id
    queued: str = "queued"  # waiting for a worker (with no worker named)
    claimed: str = "running"  # what claiming sets
    held: tuple[str, ...] = ("running",)  # statuses in which the named worker holds it
    max_attempts: int = 3
    # What a lost worker's row becomes: re-queued while attempts last, or failed at once.
    requeue_when_lost: bool = True
    failed: str = "failed"
    cancelled: str = "cancelled"
    before_queue: tuple[str, ...] = ()  # statuses before "queued" (still cancelled at once)
    resets: dict[str, Any] = field(default_factory=dict)  # cleared on every re-queue
    note: Note | None = None
    # Called when the reaper ends a row (failed or cancelled): (session, id, error).
    on_end: Callable[[Session, uuid.UUID, str | None], None] | None = None
    # The order in which a worker takes waiting rows (claim_next); None: the row named by
    # the message, as it comes.
    fair_order: Callable[[], list[Any]] | None = None

    def col(self, name: str) -> Any:
        return getattr(self.model, name)

    def row_is(self, item_id: uuid.UUID) -> ColumnElement[bool]:
        return self.col("id") == item_id

    def is_held_by(self, item_id: uuid.UUID, worker: str) -> ColumnElement[bool]:
        return and_(
            self.row_is(item_id), self.col("worker") == worker, self.col("status").in_(self.held)
        )


_KINDS: dict[str, Kind] = {}


def register(kind: Kind) -> Kind:
    _KINDS[kind.name] = kind
    return kind


def kind(name: str) -> Kind:
    return _KINDS[name]


def kinds() -> list[Kind]:
    return list(_KINDS.values())


# --- The moves ----------------------------------------------------------------------------


def claim(session: Session, kind: Kind, item_id: uuid.UUID, *, worker: str) -> Any | None:
    """Take a waiting row for ``worker``; None when it is not waiting (taken, cancelled,
    done), which makes a second delivery of the same message harmless."""
    now = utcnow()
    claimed = session.execute(
        update(kind.model)
        .where(
            kind.row_is(item_id),
            kind.col("status") == kind.queued,
            kind.col("worker").is_(None),
        )
        .values(
            status=kind.claimed,
            worker=worker,
            heartbeat_at=now,
            attempts=kind.col("attempts") + 1,
            started_at=func.coalesce(kind.col("started_at"), now),
            error=None,
        )
    )
    if not claimed.rowcount:  # type: ignore[attr-defined]
        return None
    _note(session, kind, item_id, "info", f"Started on worker {worker}")
    session.flush()
    row = session.get(kind.model, item_id)
    if row is not None:
        session.refresh(row)
    return row


def claim_next(
    session: Session,
    kind: Kind,
    item_id: uuid.UUID,
    *,
    worker: str,
    queues: Iterable[str] = (),
) -> Any | None:
    """Take, for ``worker``, the waiting row that comes first in the kind's fair order among
    those on ``queues`` (the named row's queue when none is given): the broker's message is a
    wake-up, and which row it wakes for is decided here. Kinds without an order take the
    named row (``claim``). None when nothing waits.

    On Postgres the candidate is locked with SKIP LOCKED, so workers claiming at once take
    different rows; the claim itself stays the conditional UPDATE, so a lost race (SQLite)
    only means trying the next one."""
    if kind.fair_order is None:
        return claim(session, kind, item_id, worker=worker)
    wanted = list(queues)
    if not wanted:
        named = session.scalar(select(kind.col("queue")).where(kind.row_is(item_id)))
        if named is None:
            return None
        wanted = [named]
    for _ in range(5):
        candidate = session.scalar(
            select(kind.col("id"))
            .where(
                kind.col("status") == kind.queued,
                kind.col("worker").is_(None),
                kind.col("queue").in_(wanted),
            )
            .order_by(*kind.fair_order())
            .limit(1)
            .with_for_update(skip_locked=True, of=kind.model)
        )
        if candidate is None:
            return None
        row = claim(session, kind, candidate, worker=worker)
        if row is not None:
            return row
    return None


def still_waiting(session: Session, kind: Kind, item_id: uuid.UUID) -> Offer | None:
    """The row as an offer when it still waits for a worker."""
    queue = session.scalar(
        select(kind.col("queue")).where(
            kind.row_is(item_id), kind.col("status") == kind.queued, kind.col("worker").is_(None)
        )
    )
    return Offer(kind, item_id, queue) if queue is not None else None


@dataclass(frozen=True)
class Beat:
    ours: bool  # False: another worker holds it now, or it ended; write nothing more
    cancel: bool  # someone asked it to stop


def heartbeat(
    session: Session,
    kind: Kind,
    item_id: uuid.UUID,
    *,
    worker: str,
    values: dict[str, Any] | None = None,
) -> Beat:
    """Renew the lease (with ``values``, e.g. progress) if ``worker`` still holds it."""
    renewed = session.execute(
        update(kind.model)
        .where(kind.is_held_by(item_id, worker))
        .values(heartbeat_at=utcnow(), **(values or {}))
    )
    ours = bool(renewed.rowcount)  # type: ignore[attr-defined]
    return Beat(ours=ours, cancel=cancel_asked(session, kind, item_id))


def cancel(session: Session, kind: Kind, item_id: uuid.UUID) -> str | None:
    """Cancel waiting work at once ("cancelled"), or ask the worker holding it to stop at its
    next step ("asked"); None when it has already ended."""
    now = utcnow()
    waiting = session.execute(
        update(kind.model)
        .where(
            kind.row_is(item_id),
            kind.col("status").in_((kind.queued, *kind.before_queue)),
            kind.col("worker").is_(None),
        )
        .values(status=kind.cancelled, finished_at=now, cancel_requested_at=now)
    )
    if waiting.rowcount:  # type: ignore[attr-defined]
        return "cancelled"
    running = session.execute(
        update(kind.model)
        .where(
            kind.row_is(item_id),
            kind.col("status").in_(kind.held),
            kind.col("worker").is_not(None),
        )
        .values(cancel_requested_at=func.coalesce(kind.col("cancel_requested_at"), now))
    )
    return "asked" if running.rowcount else None  # type: ignore[attr-defined]


def cancel_asked(session: Session, kind: Kind, item_id: uuid.UUID) -> bool:
    asked = session.scalar(select(kind.col("cancel_requested_at")).where(kind.row_is(item_id)))
    return asked is not None


def finish(
    session: Session,
    kind: Kind,
    item_id: uuid.UUID,
    *,
    worker: str,
    status: str,
    error: str | None = None,
    values: dict[str, Any] | None = None,
    message: str | None = None,
    level: str = "info",
) -> bool:
    """End the work held by ``worker`` with ``status``; False, and nothing written, when the
    lease was lost meanwhile. The caller writes the rest of the outcome in the same
    transaction only when this returns True."""
    done = session.execute(
        update(kind.model)
        .where(kind.is_held_by(item_id, worker))
        .values(status=status, finished_at=utcnow(), error=error, **(values or {}))
    )
    if not done.rowcount:  # type: ignore[attr-defined]
        return False
    if message:
        _note(session, kind, item_id, level, message)
    return True


def hand_back(session: Session, kind: Kind, item_id: uuid.UUID, *, worker: str) -> str | None:
    """A stopping worker gives its work back to the queue. Returns the queue to send it to,
    or None when it is no longer this worker's."""
    back = session.execute(
        update(kind.model).where(kind.is_held_by(item_id, worker)).values(**_back_in_queue(kind))
    )
    if not back.rowcount:  # type: ignore[attr-defined]
        return None
    _note(
        session,
        kind,
        item_id,
        "warning",
        f"Worker {worker} is shutting down; handed back to the queue",
    )
    return str(session.scalar(select(kind.col("queue")).where(kind.row_is(item_id))))


@dataclass(frozen=True)
class Offer:
    """A row to send to the broker: its kind, id and queue."""

    kind: Kind
    item_id: uuid.UUID
    queue: str


def reap(
    session: Session,
    *,
    lease_seconds: float,
    now: datetime | None = None,
    worker: str | None = None,
    reason: str | None = None,
) -> list[Offer]:
    """Deal with every row whose worker stopped heart-beating: cancelled if that was asked,
    failed once its attempts are used up (or at once, for kinds that are not re-run), else
    back in the queue. Returns the re-queued rows, to be offered to the broker.

    ``worker`` limits this to one worker's rows (one known to be dead: with
    ``lease_seconds=0`` they are taken back at once); ``reason`` says how it was lost.
    """
    cutoff = (now or utcnow()) - timedelta(seconds=lease_seconds)
    offers: list[Offer] = []
    for kind in kinds():
        conditions = [
            kind.col("status").in_(kind.held),
            kind.col("worker").is_not(None),
            kind.col("heartbeat_at") <= cutoff,
        ]
        if worker is not None:
            conditions.append(kind.col("worker") == worker)
        stale = session.execute(
            select(
                kind.col("id"),
                kind.col("worker"),
                kind.col("attempts"),
                kind.col("queue"),
                kind.col("cancel_requested_at"),
            ).where(*conditions)
        ).all()
        for item_id, holder, attempts, queue, cancel_requested in stale:
            lost = reason or f"worker {holder} stopped responding"
            if cancel_requested is not None:
                values: dict[str, Any] = {"status": kind.cancelled, "finished_at": utcnow()}
                message, level = f"{lost}; cancelled as requested", "info"
            elif not kind.requeue_when_lost or attempts >= kind.max_attempts:
                error = (
                    lost if not kind.requeue_when_lost else f"{lost} on each of {attempts} attempts"
                )
                values = {"status": kind.failed, "finished_at": utcnow(), "error": error}
                message, level = error, "error"
            else:
                values = _back_in_queue(kind)
                message, level = f"{lost}; re-queued (attempt {attempts + 1})", "warning"
            changed = session.execute(
                update(kind.model)
                .where(
                    kind.is_held_by(item_id, holder),
                    kind.col("heartbeat_at") <= cutoff,
                )
                .values(**values)
            )
            if changed.rowcount:  # type: ignore[attr-defined]
                _note(session, kind, item_id, level, message)
                if values["status"] == kind.queued:
                    offers.append(Offer(kind, item_id, queue))
                elif kind.on_end is not None:
                    kind.on_end(session, item_id, values.get("error"))
    session.flush()
    return offers


def waiting_unoffered(
    session: Session, *, queues: Iterable[str], offered_before: datetime
) -> list[Offer]:
    """Rows waiting on ``queues`` whose message the broker was never handed, or was handed
    before ``offered_before``: an idle worker of those queues would have taken them by now,
    so the message is lost (a broker restarted without its data) or was never sent (the
    broker was down when the row was made)."""
    wanted = list(queues)
    offers: list[Offer] = []
    for kind in kinds():
        rows = session.execute(
            select(kind.col("id"), kind.col("queue")).where(
                kind.col("status") == kind.queued,
                kind.col("worker").is_(None),
                kind.col("queue").in_(wanted),
                (kind.col("offered_at").is_(None)) | (kind.col("offered_at") < offered_before),
            )
        ).all()
        offers.extend(Offer(kind, item_id, queue) for item_id, queue in rows)
    return offers


def mark_offered(session: Session, offer: Offer) -> None:
    session.execute(
        update(offer.kind.model)
        .where(offer.kind.row_is(offer.item_id), offer.kind.col("status") == offer.kind.queued)
        .values(offered_at=utcnow())
    )


def _back_in_queue(kind: Kind) -> dict[str, Any]:
    return {
        "status": kind.queued,
        "worker": None,
        "heartbeat_at": None,
        "queued_at": utcnow(),
        "offered_at": None,
        **kind.resets,
    }


def _note(session: Session, kind: Kind, item_id: uuid.UUID, level: str, message: str) -> None:
    if kind.note is not None:
        kind.note(session, item_id, level, message)


# --- The kinds ----------------------------------------------------------------------------


def _job_note(session: Session, job_id: uuid.UUID, level: str, message: str) -> None:
    from app.services.jobs import add_event

    add_event(session, job_id=job_id, level=level, message=message)


def _answers_ended(session: Session, run_id: uuid.UUID, error: str | None) -> None:
    from app.services.reviews.campaigns import answers_abandoned

    answers_abandoned(session, run_id=run_id, error=error or "the answering was stopped")


def _jobs_in_fair_order() -> list[Any]:
    """Waiting jobs, first to last: the project of higher priority; then the project with
    the fewest jobs running; then the one whose last job started longest ago (never first),
    so one project's many jobs take turns with another's single one; then the oldest."""
    from app.models import Project

    other = aliased(Job)
    priority = select(Project.priority).where(Project.id == Job.project_id).scalar_subquery()
    running = (
        select(func.count())
        .select_from(other)
        .where(other.project_id == Job.project_id, other.status == "running")
        .scalar_subquery()
    )
    last_start = (
        select(func.max(other.started_at))
        .where(other.project_id == Job.project_id)
        .scalar_subquery()
    )
    return [
        priority.desc(),
        running.asc(),
        last_start.asc().nulls_first(),
        func.coalesce(Job.queued_at, Job.created_at).asc(),
        Job.id,
    ]


def _register_kinds() -> None:
    from worker.spec.tasks import (
        ANSWER_REVIEW_ITEMS,
        EVALUATE_MODELS,
        MAKE_EXPORT,
        SERVE_DEPLOYMENT,
        TRAIN_JOB,
    )

    register(
        Kind(
            "job",
            Job,
            TRAIN_JOB,
            before_queue=("validating_files",),
            note=_job_note,
            fair_order=_jobs_in_fair_order,
        )
    )
    # An evaluation writes its answers only at the end: a re-run starts from nothing.
    register(Kind("evaluation", Evaluation, EVALUATE_MODELS, resets={"progress": {}}))
    # An export is written to a staging folder and renamed into place when checked: a re-run
    # starts clean, and a half-written one is never reported.
    register(Kind("export", Export, MAKE_EXPORT))
    # A deployment is waiting ("starting", no worker) until a worker loads it; a server whose
    # worker goes silent has dropped its clients, so it fails rather than restarting unseen.
    register(
        Kind(
            "deployment",
            Deployment,
            SERVE_DEPLOYMENT,
            queued="starting",
            claimed="starting",
            held=("starting", "running", "stopping"),
            requeue_when_lost=False,
            cancelled="stopped",
        )
    )
    # A run that cannot finish leaves its prompts failed, with why, instead of waiting.
    register(Kind("review_answers", ReviewAnswerRun, ANSWER_REVIEW_ITEMS, on_end=_answers_ended))


_register_kinds()
JOB, EVALUATION, EXPORT, DEPLOYMENT, REVIEW_ANSWERS = (
    kind(n) for n in ("job", "evaluation", "export", "deployment", "review_answers")
)
