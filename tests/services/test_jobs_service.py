"""The jobs service on Postgres, each test in a rolled-back transaction (the lease every job
holds is tested with the other kinds in test_leases.py)."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.db import utcnow
from app.models import Dataset, DatasetVersion, Job, JobEvent, JobStatus, Project
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
