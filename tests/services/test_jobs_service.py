"""The job state machine and the lease, on Postgres, each test in a rolled-back transaction."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.db import utcnow
from app.core.errors import Conflict
from app.models import Dataset, DatasetVersion, Job, JobEvent, JobStatus, MetricPoint, Project
from app.services import jobs


@pytest.fixture
def job(db_session: Session) -> Job:
    project = Project(name="p")
    db_session.add(project)
    db_session.flush()
    dataset = Dataset(project_id=project.id, name="d")
    db_session.add(dataset)
    db_session.flush()
    version = DatasetVersion(
        dataset_id=dataset.id,
        number=1,
        sha256="0" * 64,
        digest="0" * 64,
        format="alpaca",
        container="jsonl",
        records=1,
        size_bytes=1,
        records_path="x",
        raw_path="y",
    )
    db_session.add(version)
    db_session.flush()
    row = Job(
        project_id=project.id,
        dataset_id=dataset.id,
        dataset_version_id=version.id,
        config={"base_model": "m"},
        status=JobStatus.queued,
        queued_at=utcnow(),
        result={},
    )
    db_session.add(row)
    db_session.flush()
    return row


def test_a_queued_job_is_claimed_by_exactly_one_worker(db_session: Session, job: Job) -> None:
    first = jobs.claim_job(db_session, job_id=job.id, worker="a")
    second = jobs.claim_job(db_session, job_id=job.id, worker="b")
    assert first is not None and first.worker == "a" and first.attempts == 1
    assert second is None


def test_a_cancelled_job_is_never_claimed(db_session: Session, job: Job) -> None:
    assert jobs.cancel_job(db_session, job_id=job.id).status == JobStatus.cancelled
    assert jobs.claim_job(db_session, job_id=job.id, worker="a") is None


def test_cancelling_a_running_job_asks_its_worker(db_session: Session, job: Job) -> None:
    jobs.claim_job(db_session, job_id=job.id, worker="a")
    after = jobs.cancel_job(db_session, job_id=job.id)
    assert after.status == JobStatus.running and after.cancel_requested_at is not None
    assert jobs.heartbeat(db_session, job_id=job.id, worker="a") == (True, True)
    assert jobs.finish_job(db_session, job_id=job.id, worker="a", status=JobStatus.cancelled)
    with pytest.raises(Conflict):
        jobs.cancel_job(db_session, job_id=job.id)


def test_a_step_recorded_twice_is_stored_once(db_session: Session, job: Job) -> None:
    jobs.claim_job(db_session, job_id=job.id, worker="a")
    for _ in range(2):
        jobs.record_step(
            db_session, job_id=job.id, worker="a", step=1, total_steps=5, values={"loss": 2.0}
        )
    points = db_session.scalars(select(MetricPoint).where(MetricPoint.job_id == job.id)).all()
    assert [(p.step, p.value) for p in points] == [(1, 2.0)]


def test_reaper_requeues_a_job_whose_worker_went_silent(db_session: Session, job: Job) -> None:
    jobs.claim_job(db_session, job_id=job.id, worker="dead")
    job.heartbeat_at = utcnow() - timedelta(minutes=10)
    db_session.flush()
    assert jobs.reap_stale_jobs(db_session, lease_seconds=60) == [(job.id, job.queue)]
    db_session.refresh(job)
    assert job.status == JobStatus.queued and job.worker is None
    # The dead worker's late report must not overwrite the new state.
    assert not jobs.finish_job(db_session, job_id=job.id, worker="dead", status=JobStatus.failed)
    again = jobs.claim_job(db_session, job_id=job.id, worker="alive")
    assert again is not None and again.attempts == 2


def test_reaper_leaves_a_job_with_a_fresh_heartbeat(db_session: Session, job: Job) -> None:
    jobs.claim_job(db_session, job_id=job.id, worker="a")
    assert jobs.reap_stale_jobs(db_session, lease_seconds=60) == []


def test_reaper_fails_a_job_that_lost_its_worker_on_every_attempt(
    db_session: Session, job: Job
) -> None:
    jobs.claim_job(db_session, job_id=job.id, worker="a")
    job.attempts = 3
    job.heartbeat_at = utcnow() - timedelta(minutes=10)
    db_session.flush()
    assert jobs.reap_stale_jobs(db_session, lease_seconds=60, max_attempts=3) == []
    db_session.refresh(job)
    assert job.status == JobStatus.failed and "3 attempts" in (job.error or "")


def test_events_can_be_read_incrementally(db_session: Session, job: Job) -> None:
    for i in range(3):
        jobs.add_event(db_session, job_id=job.id, message=f"e{i}")
    db_session.flush()
    all_events = jobs.list_events(db_session, job_id=job.id)
    newer = jobs.list_events(db_session, job_id=job.id, after_id=all_events[0].id)
    assert [e.message for e in newer] == ["e1", "e2"]
    assert db_session.scalar(select(JobEvent.job_id).limit(1)) is not None


def test_unknown_job_is_not_found(db_session: Session) -> None:
    from app.core.errors import NotFound

    with pytest.raises(NotFound):
        jobs.get_job(db_session, job_id=uuid.uuid4())
