"""The one lease of all queued work, on Postgres, each test in a rolled-back transaction:
claimed once, cancelled, heart-beaten, finished only by its holder, reaped into the queue or
to a final state, handed back, and found again when its broker message was lost."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.db import utcnow
from app.core.errors import Conflict
from app.models import (
    Deployment,
    Evaluation,
    Export,
    Job,
    JobEvent,
    JobStatus,
    MetricPoint,
    ReviewAnswerRun,
)
from app.services import jobs, leases
from tests.services.test_jobs_service import job  # noqa: F401  (the fixture)


@pytest.fixture
def rows(db_session: Session, job: Job) -> dict[str, Any]:  # noqa: F811
    """One waiting row of every kind, on the job's project."""
    from app.models import Project, ReviewCampaign

    project = db_session.get(Project, job.project_id)
    assert project is not None
    evaluation = Evaluation(
        project_id=project.id,
        dataset_version_id=job.dataset_version_id,
        candidates=[],
        settings={},
        status="queued",
        progress={},
        results={},
    )
    export = Export(job_id=job.id, kind="adapter", status="queued")
    deployment = Deployment(
        project_id=project.id, name=f"d-{uuid.uuid4().hex[:6]}", base_model="m", api_key="k"
    )
    campaign = ReviewCampaign(project_id=project.id, name="c", model_a={"key": "a"})
    db_session.add_all([evaluation, export, deployment, campaign])
    db_session.flush()
    run = ReviewAnswerRun(campaign_id=campaign.id)
    db_session.add(run)
    db_session.flush()
    return {
        "job": job,
        "evaluation": evaluation,
        "export": export,
        "deployment": deployment,
        "review_answers": run,
    }


KINDS = ["job", "evaluation", "export", "deployment", "review_answers"]


def stale(db_session: Session, row: Any) -> None:
    row.heartbeat_at = utcnow() - timedelta(minutes=10)
    db_session.flush()


@pytest.mark.parametrize("name", KINDS)
def test_waiting_work_is_claimed_by_exactly_one_worker(
    db_session: Session, rows: dict[str, Any], name: str
) -> None:
    kind, row = leases.kind(name), rows[name]
    first = leases.claim(db_session, kind, row.id, worker="a")
    second = leases.claim(db_session, kind, row.id, worker="b")
    assert first is not None and first.worker == "a" and first.attempts == 1
    assert second is None


@pytest.mark.parametrize("name", KINDS)
def test_only_the_holder_finishes_and_a_lost_worker_is_reaped_to_the_queue(
    db_session: Session, rows: dict[str, Any], name: str
) -> None:
    kind, row = leases.kind(name), rows[name]
    leases.claim(db_session, kind, row.id, worker="dead")
    stale(db_session, row)
    offers = leases.reap(db_session, lease_seconds=60)
    db_session.refresh(row)
    if kind.requeue_when_lost:
        assert [(o.kind.name, o.item_id) for o in offers] == [(name, row.id)]
        assert row.status == kind.queued and row.worker is None and row.offered_at is None
        # The dead worker's late report must not overwrite the new state.
        assert not leases.finish(db_session, kind, row.id, worker="dead", status=kind.failed)
        again = leases.claim(db_session, kind, row.id, worker="alive")
        assert again is not None and again.attempts == 2
    else:  # a deployment's clients were cut off: it fails, visibly, instead
        assert offers == []
        assert row.status == "failed" and "stopped responding" in (row.error or "")


@pytest.mark.parametrize("name", KINDS)
def test_every_kind_gives_up_after_its_attempts(
    db_session: Session, rows: dict[str, Any], name: str
) -> None:
    """An evaluation used to be re-queued forever; now every kind ends, failed."""
    kind, row = leases.kind(name), rows[name]
    leases.claim(db_session, kind, row.id, worker="a")
    row.attempts = kind.max_attempts
    stale(db_session, row)
    assert leases.reap(db_session, lease_seconds=60) == []
    db_session.refresh(row)
    assert row.status == kind.failed and row.finished_at is not None


@pytest.mark.parametrize("name", KINDS)
def test_a_fresh_heartbeat_is_left_alone(
    db_session: Session, rows: dict[str, Any], name: str
) -> None:
    kind, row = leases.kind(name), rows[name]
    leases.claim(db_session, kind, row.id, worker="a")
    assert leases.reap(db_session, lease_seconds=60) == []


@pytest.mark.parametrize("name", KINDS)
def test_the_heartbeat_is_refused_to_a_worker_that_does_not_hold_the_row(
    db_session: Session, rows: dict[str, Any], name: str
) -> None:
    """A deployment's heartbeat used not to check which worker held it."""
    kind, row = leases.kind(name), rows[name]
    leases.claim(db_session, kind, row.id, worker="a")
    assert leases.heartbeat(db_session, kind, row.id, worker="a").ours
    assert not leases.heartbeat(db_session, kind, row.id, worker="b").ours


@pytest.mark.parametrize("name", KINDS)
def test_only_the_holder_hands_work_back(
    db_session: Session, rows: dict[str, Any], name: str
) -> None:
    kind, row = leases.kind(name), rows[name]
    leases.claim(db_session, kind, row.id, worker="a")
    assert leases.hand_back(db_session, kind, row.id, worker="b") is None
    assert leases.hand_back(db_session, kind, row.id, worker="a") == row.queue
    db_session.refresh(row)
    assert row.status == kind.queued and row.worker is None and row.attempts == 1


def test_a_queued_job_is_claimed_by_exactly_one_worker(db_session: Session, job: Job) -> None:  # noqa: F811
    first = leases.claim(db_session, leases.JOB, job.id, worker="a")
    second = leases.claim(db_session, leases.JOB, job.id, worker="b")
    assert first is not None and first.worker == "a" and first.attempts == 1
    assert second is None


def test_a_cancelled_job_is_never_claimed(db_session: Session, job: Job) -> None:  # noqa: F811
    assert jobs.cancel_job(db_session, job_id=job.id).status == JobStatus.cancelled
    assert leases.claim(db_session, leases.JOB, job.id, worker="a") is None


def test_cancelling_a_running_job_asks_its_worker(db_session: Session, job: Job) -> None:  # noqa: F811
    leases.claim(db_session, leases.JOB, job.id, worker="a")
    after = jobs.cancel_job(db_session, job_id=job.id)
    assert after.status == JobStatus.running and after.cancel_requested_at is not None
    assert leases.heartbeat(db_session, leases.JOB, job.id, worker="a") == leases.Beat(True, True)
    assert leases.finish(db_session, leases.JOB, job.id, worker="a", status=JobStatus.cancelled)
    with pytest.raises(Conflict):
        jobs.cancel_job(db_session, job_id=job.id)


def test_a_step_recorded_twice_is_stored_once(db_session: Session, job: Job) -> None:  # noqa: F811
    leases.claim(db_session, leases.JOB, job.id, worker="a")
    for _ in range(2):
        jobs.record_step(db_session, job_id=job.id, step=1, total_steps=5, values={"loss": 2.0})
    points = db_session.scalars(select(MetricPoint).where(MetricPoint.job_id == job.id)).all()
    assert [(p.step, p.value) for p in points] == [(1, 2.0)]


def test_reaping_a_job_says_so_in_its_events(db_session: Session, job: Job) -> None:  # noqa: F811
    leases.claim(db_session, leases.JOB, job.id, worker="dead")
    stale(db_session, job)
    leases.reap(db_session, lease_seconds=60)
    messages = db_session.scalars(select(JobEvent.message).where(JobEvent.job_id == job.id)).all()
    assert any("re-queued (attempt 2)" in m for m in messages)


def test_a_cancelled_job_whose_worker_died_ends_cancelled(db_session: Session, job: Job) -> None:  # noqa: F811
    leases.claim(db_session, leases.JOB, job.id, worker="dead")
    jobs.cancel_job(db_session, job_id=job.id)
    stale(db_session, job)
    assert leases.reap(db_session, lease_seconds=60) == []
    db_session.refresh(job)
    assert job.status == JobStatus.cancelled


def test_a_dead_workers_rows_are_taken_back_at_once(db_session: Session, job: Job) -> None:  # noqa: F811
    leases.claim(db_session, leases.JOB, job.id, worker="gone:1")
    offers = leases.reap(db_session, lease_seconds=0, worker="gone:1", reason="the worker died")
    assert [o.item_id for o in offers] == [job.id]
    messages = db_session.scalars(select(JobEvent.message).where(JobEvent.job_id == job.id)).all()
    assert any(m.startswith("the worker died; re-queued") for m in messages)


@pytest.mark.parametrize("name", KINDS)
def test_waiting_work_without_a_recent_offer_is_found_again(
    db_session: Session, rows: dict[str, Any], name: str
) -> None:
    kind, row = leases.kind(name), rows[name]
    queue = f"q-{uuid.uuid4().hex[:6]}"
    row.queue = queue
    db_session.flush()

    def found(before_seconds: float) -> list[uuid.UUID]:
        cutoff = utcnow() - timedelta(seconds=before_seconds)
        offers = leases.waiting_unoffered(db_session, queues=[queue], offered_before=cutoff)
        return [o.item_id for o in offers]

    assert found(30) == [row.id]  # never offered (the broker was down)
    leases.mark_offered(db_session, leases.Offer(kind, row.id, queue))
    db_session.flush()
    assert found(30) == []  # just offered: give the broker time to deliver
    assert found(-1) == [row.id]  # offered long ago, still waiting: the message is lost
    leases.claim(db_session, kind, row.id, worker="a")
    assert found(-1) == []


def test_a_transaction_a_frozen_worker_left_open_ends_after_the_lease_and_frees_its_locks() -> None:
    """A worker frozen in the middle of a write holds that row's locks; the reaper's UPDATE of
    the row would wait for them as long as the freeze lasts. Worker processes have Postgres
    end a transaction left idle past the lease (app.core.db.end_idle_transactions_after)."""
    import time

    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from app.core import db
    from app.core.config import get_settings

    url = get_settings().sqlalchemy_url
    db.end_idle_transactions_after(1.0)  # as a worker does with its lease, shortened
    try:
        frozen = db.make_engine(url)
    finally:
        db.end_idle_transactions_after(None)  # this test process is no worker
    reaper = db.make_engine(url)
    try:
        with frozen.connect() as worker, reaper.connect() as upkeep:
            setting = worker.execute(text("SHOW idle_in_transaction_session_timeout")).scalar()
            assert setting == "1s"
            assert upkeep.execute(text("SHOW idle_in_transaction_session_timeout")).scalar() == "0"
            worker.rollback()
            # The worker locks (as its heartbeat's UPDATE locks its row), then freezes.
            worker.execute(text("SELECT pg_advisory_xact_lock(424242)"))
            upkeep.execute(text("SET lock_timeout = '20s'"))
            started = time.monotonic()
            upkeep.execute(text("SELECT pg_advisory_xact_lock(424242)"))  # the reaper waits...
            assert time.monotonic() - started < 10  # ...about the second, not for ever
            upkeep.rollback()
            # Woken, the frozen worker finds its connection ended: nothing it sends lands.
            with pytest.raises(DBAPIError, match="idle-in-transaction"):
                worker.execute(text("SELECT 1"))
    finally:
        frozen.dispose()
        reaper.dispose()
