from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Query
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from app.api.deps import (
    CurrentReader,
    CurrentTrainer,
    Limit,
    Offset,
    SessionDep,
    SettingsDep,
    make_router,
)
from app.core.coalesce import Coalescer
from app.core.db import get_sessionmaker
from app.core.i18n import current_locale, using_locale
from app.models import JobStatus, User
from app.schemas.common import Page
from app.schemas.job import ArtifactRead, JobCreate, JobEventRead, JobRead, MetricPointRead
from app.services import access
from app.services import jobs as service
from app.services.jobs import artifacts as artifacts_service
from app.services.jobs import job_read

router = make_router(tags=["jobs"])


@router.post("/jobs", status_code=201, response_model=JobRead)
def create_job(
    body: JobCreate, session: SessionDep, settings: SettingsDep, me: CurrentTrainer
) -> JobRead:
    """Validate the config and the dataset, and queue the job for a worker."""
    job = service.create_job(session, settings=settings, data=body, user=me.user)
    session.commit()
    service.offer(session, job=job)
    return job_read(job)


@router.get("/jobs", response_model=Page[JobRead])
def list_jobs(
    session: SessionDep,
    me: CurrentReader,
    limit: Limit = 50,
    offset: Offset = 0,
    project_id: uuid.UUID | None = None,
    status: Annotated[JobStatus | None, Query()] = None,
) -> Page[JobRead]:
    rows, total = service.list_jobs(
        session, user=me.user, limit=limit, offset=offset, project_id=project_id, status=status
    )
    return Page(items=[job_read(j) for j in rows], total=total, limit=limit, offset=offset)


@router.get("/jobs/{job_id}", response_model=JobRead)
async def get_job(job_id: uuid.UUID, me: CurrentReader) -> Response:
    # The route scripts poll, often many of them the same job at once: concurrent reads of
    # one job by one user share a database load, each answered with what was read after it
    # arrived (app.core.coalesce). The load runs on the thread pool, in one hop.
    user = User(id=me.user.id, role=me.user.role)
    locale = current_locale()
    body = await JOB_READS.read(
        (job_id, user.id, locale), lambda: run_in_threadpool(_job_json, job_id, user, locale)
    )
    return Response(body, media_type="application/json")


JOB_READS: Coalescer[bytes] = Coalescer()


def _job_json(job_id: uuid.UUID, user: User, locale: str) -> bytes:
    """The job as its JSON body, read in a session of its own (the read is shared by every
    request that waits for it, so it belongs to none of them)."""
    with using_locale(locale), get_sessionmaker()() as session:
        # Reads only: no transaction to begin and end (two round trips fewer). Postgres gives
        # each statement its own snapshot at the default isolation level all the same.
        session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        return job_read(access.job_for(session, user, job_id)).model_dump_json().encode()


@router.get("/jobs/{job_id}/events", response_model=list[JobEventRead])
def list_events(
    job_id: uuid.UUID,
    session: SessionDep,
    me: CurrentReader,
    after: Annotated[int, Query(ge=0, le=2**62, description="only events with a larger id")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> list[JobEventRead]:
    access.job_for(session, me.user, job_id)
    events = service.list_events(session, job_id=job_id, after_id=after, limit=limit)
    return [JobEventRead.model_validate(e) for e in events]


@router.get("/jobs/{job_id}/metrics", response_model=list[MetricPointRead])
def list_metrics(
    job_id: uuid.UUID,
    session: SessionDep,
    me: CurrentReader,
    name: str | None = None,
    after_step: Annotated[
        int, Query(ge=-1, le=2**31 - 1, description="only steps after this one")
    ] = -1,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
) -> list[MetricPointRead]:
    access.job_for(session, me.user, job_id)
    points = service.list_metrics(
        session, job_id=job_id, name=name, after_step=after_step, limit=limit
    )
    return [MetricPointRead.model_validate(p) for p in points]


@router.post("/jobs/{job_id}/cancel", response_model=JobRead)
def cancel_job(job_id: uuid.UUID, session: SessionDep, me: CurrentTrainer) -> JobRead:
    """Cancel: a waiting job at once, a running one within seconds (at its next step)."""
    access.job_for(session, me.user, job_id)
    job = service.cancel_job(session, job_id=job_id)
    session.commit()
    return job_read(job)


@router.post("/jobs/{job_id}/resume", response_model=JobRead)
def resume_job(
    job_id: uuid.UUID, session: SessionDep, settings: SettingsDep, me: CurrentTrainer
) -> JobRead:
    """Queue a cancelled or failed job again, from its newest checkpoint (409 without one)."""
    access.job_for(session, me.user, job_id)
    job = service.resume_job(session, settings=settings, job_id=job_id)
    session.commit()
    service.offer(session, job=job)
    return job_read(job)


@router.get("/jobs/{job_id}/artifacts", response_model=list[ArtifactRead])
def list_artifacts(job_id: uuid.UUID, session: SessionDep, me: CurrentReader) -> list[ArtifactRead]:
    access.job_for(session, me.user, job_id)
    return [ArtifactRead.model_validate(a) for a in service.list_artifacts(session, job_id=job_id)]


@router.get(
    "/artifacts/{artifact_id}/download",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/zip": {}}}},
)
def download_artifact(
    artifact_id: uuid.UUID, session: SessionDep, settings: SettingsDep, me: CurrentReader
) -> StreamingResponse:
    """The artifact's files as a zip archive, streamed."""
    artifact = access.artifact_for(session, me.user, artifact_id)
    return StreamingResponse(
        artifacts_service.zip_stream(settings, artifact),
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="{artifact.kind}-{artifact.job_id}.zip"',
            "X-Content-Type-Options": "nosniff",
        },
    )
