"""The worker registry: what each worker advertised when it started, when it was last seen,
and, from that, which queues the online workers serve and why a job waits.

A worker registers on start (``worker.tasks.upkeep``), its upkeep marks it seen every few
seconds, and it marks itself stopped when it shuts down. Placement itself is the broker's: a
job's queue is consumed only by workers able to run it (``worker.spec.placement``); this
registry only lets people, and the job's creation, see what is there.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.db import utcnow
from app.core.i18n import _
from app.models import Job, JobStatus, WorkerRecord
from worker.spec.placement import Capacity, Needs, parse_queue

# Rows of workers gone this long are deleted by any worker's upkeep.
FORGET_AFTER = timedelta(days=7)


def register(
    session: Session,
    *,
    name: str,
    host: str,
    capacity: Capacity,
    queues: list[str],
    models: list[str],
) -> WorkerRecord:
    """Record a worker that has just started (a restart under the same name starts afresh)."""
    now = utcnow()
    row = session.get(WorkerRecord, name)
    if row is None:
        row = WorkerRecord(name=name)
        session.add(row)
    row.host = host
    row.capacity = capacity.as_dict()
    row.queues = list(queues)
    row.models = list(models)
    row.started_at = now
    row.last_seen = now
    row.stopped_at = None
    session.flush()
    return row


def seen(session: Session, *, name: str) -> bool:
    """Mark a worker alive now; False when it has no row (forgotten: it registers again)."""
    done = session.execute(
        update(WorkerRecord).where(WorkerRecord.name == name).values(last_seen=utcnow())
    )
    return bool(done.rowcount)  # type: ignore[attr-defined]


def stopped(session: Session, *, name: str) -> None:
    now = utcnow()
    session.execute(
        update(WorkerRecord).where(WorkerRecord.name == name).values(stopped_at=now, last_seen=now)
    )


def forget_old(session: Session) -> int:
    gone = session.execute(
        delete(WorkerRecord).where(WorkerRecord.last_seen < utcnow() - FORGET_AFTER)
    )
    return int(gone.rowcount or 0)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class WorkerView:
    name: str
    host: str
    capacity: dict[str, Any]
    queues: list[str]
    models: list[str]
    started_at: datetime
    last_seen: datetime
    stopped_at: datetime | None
    online: bool
    running: list[str]  # ids of the jobs it holds

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "host": self.host,
            "capacity": self.capacity,
            "queues": self.queues,
            "models": self.models,
            "started_at": self.started_at,
            "last_seen": self.last_seen,
            "stopped_at": self.stopped_at,
            "online": self.online,
            "running_jobs": self.running,
        }


def is_online(row: WorkerRecord, settings: Settings, now: datetime | None = None) -> bool:
    cutoff = (now or utcnow()) - timedelta(seconds=settings.worker_offline_seconds)
    return row.stopped_at is None and row.last_seen >= cutoff


def list_workers(session: Session, *, settings: Settings) -> list[WorkerView]:
    """Every known worker, online ones first, then by name."""
    now = utcnow()
    rows = session.scalars(select(WorkerRecord).order_by(WorkerRecord.name)).all()
    held: dict[str, list[str]] = {}
    for job_id, worker in session.execute(
        select(Job.id, Job.worker).where(Job.status == JobStatus.running, Job.worker.is_not(None))
    ):
        held.setdefault(str(worker), []).append(str(job_id))
    views = [
        _view(row, online=is_online(row, settings, now), running=held.get(row.name, []))
        for row in rows
    ]
    return sorted(views, key=lambda v: (not v.online, v.name))


def online(session: Session, *, settings: Settings) -> list[WorkerView]:
    """The workers online now (without the jobs they run: one query)."""
    cutoff = utcnow() - timedelta(seconds=settings.worker_offline_seconds)
    rows = session.scalars(
        select(WorkerRecord)
        .where(WorkerRecord.stopped_at.is_(None), WorkerRecord.last_seen >= cutoff)
        .order_by(WorkerRecord.name)
    ).all()
    return [_view(row, online=True, running=[]) for row in rows]


def _view(row: WorkerRecord, *, online: bool, running: list[str]) -> WorkerView:
    return WorkerView(
        name=row.name,
        host=row.host,
        capacity=dict(row.capacity or {}),
        queues=list(row.queues or []),
        models=list(row.models or []),
        started_at=row.started_at,
        last_seen=row.last_seen,
        stopped_at=row.stopped_at,
        online=online,
        running=running,
    )


def serves(workers: list[WorkerView], queue: str) -> bool:
    return any(queue in w.queues for w in workers)


# --- Why work waits, in words --------------------------------------------------------------


def needs_words(needs: Needs) -> str:
    """'one GPU with 24 GB', '2 GPUs with 80 GB each and 4-bit (bitsandbytes) support',
    'a CPU'."""
    if not needs.gpu:
        return _("a CPU")
    memory = needs.memory_class
    if needs.gpus > 1:
        text = _("%(n)s GPUs with %(gb)s GB each", n=needs.gpus, gb=memory)
    else:
        text = _("one GPU with %(gb)s GB", gb=memory)
    if needs.four_bit:
        text = _("%(gpus)s and 4-bit (bitsandbytes) support", gpus=text)
    return text


def capacity_words(capacity: dict[str, Any]) -> str:
    """'2 × NVIDIA H100 80GB HBM3 (79.1 GB), 4-bit', 'CPU only'."""
    gpus = int(capacity.get("gpus") or 0)
    if not gpus:
        return _("CPU only")
    text = _(
        "%(n)s × %(name)s (%(gb)s GB)",
        n=gpus,
        name=capacity.get("gpu_name") or _("GPU"),
        gb=f"{float(capacity.get('gpu_memory_gb') or 0):.0f}",
    )
    if capacity.get("four_bit"):
        text = _("%(gpus)s, 4-bit", gpus=text)
    return text


WaitingKind = Literal["job", "evaluation", "export"]


def waiting_reason(
    session: Session,
    *,
    settings: Settings,
    queue: str,
    workers: list[WorkerView] | None = None,
    kind: WaitingKind = "job",
) -> str | None:
    """Why work on ``queue`` cannot start, in the reader's language; None when an online
    worker serves the queue (it waits its turn, if anything). ``kind`` names the waiting work
    (an evaluation or an export of a job goes on the job's queue)."""
    live = workers if workers is not None else online(session, settings=settings)
    if serves(live, queue):
        return None
    needs = parse_queue(settings.default_queue, queue)
    if not live:
        if needs is None:
            return {
                "job": _("No worker is online: the job starts when one does."),
                "evaluation": _("No worker is online: the evaluation starts when one does."),
                "export": _("No worker is online: the export starts when one does."),
            }[kind]
        words = needs_words(needs)
        return {
            "job": _(
                "No worker is online: the job starts when a worker that has %(needs)s starts.",
                needs=words,
            ),
            "evaluation": _(
                "No worker is online: the evaluation starts when a worker that has %(needs)s "
                "starts.",
                needs=words,
            ),
            "export": _(
                "No worker is online: the export starts when a worker that has %(needs)s starts.",
                needs=words,
            ),
        }[kind]
    have = "; ".join(sorted({capacity_words(w.capacity) for w in live}))
    if needs is None:
        return _(
            "No online worker consumes the queue '%(queue)s' (online: %(have)s).",
            queue=queue,
            have=have,
        )
    words = needs_words(needs)
    return {
        "job": _(
            "No online worker can run this job: it needs %(needs)s, and the online workers "
            "have %(have)s. It starts when a worker that can run it starts.",
            needs=words,
            have=have,
        ),
        "evaluation": _(
            "No online worker can run this evaluation: its job's queue needs %(needs)s, and "
            "the online workers have %(have)s. It starts when a worker that can run it starts.",
            needs=words,
            have=have,
        ),
        "export": _(
            "No online worker can make this export: its job's queue needs %(needs)s, and the "
            "online workers have %(have)s. It starts when a worker that can run it starts.",
            needs=words,
            have=have,
        ),
    }[kind]
