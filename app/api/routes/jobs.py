from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Query
from fastapi.responses import Response, StreamingResponse

from app.api.deps import (
    CurrentReader,
    CurrentTrainer,
    Limit,
    Offset,
    SessionDep,
    SettingsDep,
    make_router,
)
from app.models import JobStatus
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
def get_job(job_id: uuid.UUID, session: SessionDep, me: CurrentReader) -> Response:
    # The route scripts poll. Its body is serialised here, on the pool thread that read the
    # job: returned as a model, it would be validated again on a second hop to the thread
    # pool (FastAPI does that for every plain `def` route with a response model).
    job = job_read(access.job_for(session, me.user, job_id))
    return Response(job.model_dump_json(), media_type="application/json")


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
