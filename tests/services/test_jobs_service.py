"""The jobs service on Postgres, each test in a rolled-back transaction (the lease every job
holds is tested with the other kinds in test_leases.py)."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.db import utcnow
from app.models import Job, JobEvent, JobStatus
from app.services import jobs
from tests.services.rows import project_with_version


@pytest.fixture
def job(db_session: Session) -> Job:
    project, version = project_with_version(db_session)
    row = Job(
        project_id=project.id,
        dataset_id=version.dataset_id,
        dataset_version_id=version.id,
        config={"base_model": "m"},
        status=JobStatus.queued,
        queued_at=utcnow(),
        result={},
    )
    db_session.add(row)
    db_session.flush()
    return row


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
