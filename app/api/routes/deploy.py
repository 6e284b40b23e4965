"""Exports of a job's model and deployments behind the OpenAI-compatible endpoint."""

from __future__ import annotations

import uuid

from fastapi import Response
from fastapi.responses import FileResponse

from app.api.deps import (
    CurrentReader,
    CurrentTrainer,
    Limit,
    Offset,
    SessionDep,
    SettingsDep,
    make_router,
)
from app.core.errors import NotFound
from app.schemas.common import Page
from app.schemas.deploy import DeploymentCreate, DeploymentRead, ExportCreate, ExportRead
from app.services import access, deployments
from app.services import exports as service

router = make_router(tags=["deploy"])


@router.post("/jobs/{job_id}/exports", status_code=201, response_model=ExportRead)
def create_export(
    job_id: uuid.UUID, body: ExportCreate, session: SessionDep, me: CurrentTrainer
) -> ExportRead:
    """Package the job's model on a worker: the adapter (PEFT format), or merged into the
    base model and checked against base + adapter before it is kept."""
    export = service.create_export(
        session, job_id=job_id, kind=body.kind, dtype=body.dtype, user=me.user
    )
    session.commit()
    service.offer(session, export=export)
    return service.export_read(session, export)


@router.get("/jobs/{job_id}/exports", response_model=list[ExportRead])
def list_exports(job_id: uuid.UUID, session: SessionDep, me: CurrentReader) -> list[ExportRead]:
    access.job_for(session, me.user, job_id)
    return [service.export_read(session, e) for e in service.list_exports(session, job_id=job_id)]


@router.get("/exports/{export_id}", response_model=ExportRead)
def get_export(export_id: uuid.UUID, session: SessionDep, me: CurrentReader) -> ExportRead:
    return service.export_read(session, service.export_for(session, me.user, export_id))


@router.get(
    "/exports/{export_id}/download",
    response_class=FileResponse,
    responses={200: {"content": {"application/x-tar": {}}}},
)
def download_export(
    export_id: uuid.UUID, session: SessionDep, settings: SettingsDep, me: CurrentReader
) -> FileResponse:
    """The export as one .tar file; range requests resume a broken download."""
    export = service.export_for(session, me.user, export_id)
    if export.status != "succeeded" or not export.archive_path:
        raise NotFound(f"the export has not succeeded (it is {export.status})")
    path = settings.data_dir / export.archive_path
    if not path.is_file():
        raise NotFound("the export's file is gone")
    return FileResponse(path, media_type="application/x-tar", filename=path.name)


# --- Deployments ------------------------------------------------------------------------------


@router.post("/deployments", status_code=201, response_model=DeploymentRead)
def create_deployment(
    body: DeploymentCreate, session: SessionDep, settings: SettingsDep, me: CurrentTrainer
) -> DeploymentRead:
    """Serve jobs' adapters over one loaded base model on a worker; the models are then
    reached at `/v1` (OpenAI-compatible) as `<name>/base` and `<name>/job-<id>`."""
    deployment = deployments.create_deployment(session, settings=settings, data=body, user=me.user)
    session.commit()
    deployments.offer(session, deployment=deployment)
    return deployments.deployment_read(deployment)


@router.get("/deployments", response_model=Page[DeploymentRead])
def list_deployments(
    session: SessionDep,
    me: CurrentReader,
    limit: Limit = 50,
    offset: Offset = 0,
    project_id: uuid.UUID | None = None,
) -> Page[DeploymentRead]:
    rows, total = deployments.list_deployments(
        session, user=me.user, project_id=project_id, limit=limit, offset=offset
    )
    return Page(
        items=[deployments.deployment_read(d) for d in rows],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/deployments/{deployment_id}", response_model=DeploymentRead)
def get_deployment(
    deployment_id: uuid.UUID, session: SessionDep, me: CurrentReader
) -> DeploymentRead:
    return deployments.deployment_read(deployments.deployment_for(session, me.user, deployment_id))


@router.post("/deployments/{deployment_id}/stop", response_model=DeploymentRead)
def stop_deployment(
    deployment_id: uuid.UUID, session: SessionDep, me: CurrentTrainer
) -> DeploymentRead:
    """Undeploy: the worker stops serving within seconds and is free for other work."""
    deployment = deployments.deployment_for(session, me.user, deployment_id)
    deployments.stop_deployment(session, deployment=deployment)
    session.commit()
    return deployments.deployment_read(deployment)


@router.delete("/deployments/{deployment_id}", status_code=204)
def delete_deployment(
    deployment_id: uuid.UUID, session: SessionDep, me: CurrentTrainer
) -> Response:
    deployment = deployments.deployment_for(session, me.user, deployment_id)
    deployments.delete_deployment(session, deployment=deployment)
    session.commit()
    return Response(status_code=204)
