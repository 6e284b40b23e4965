"""Deploy pages: a project's deployments (deploy and undeploy) and the playground, where a
deployed model answers in the browser, streamed, the base model beside the fine-tuned one."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import select

from app.api.deps import CurrentReader, CurrentTrainer, SessionDep, SettingsDep, make_router
from app.core.errors import TunelabError
from app.models import Job, JobStatus, ReviewCampaign
from app.schemas.deploy import DeploymentCreate
from app.services import access, deployments
from app.web.rendering import Form, render

router = make_router(include_in_schema=False)


def _context(session: SessionDep, project_id: uuid.UUID, me: Any) -> dict[str, Any]:
    project = access.project_for(session, me.user, project_id)
    rows, _ = deployments.list_deployments(
        session,
        user=me.user,
        project_id=project.id,
        limit=50,
        offset=0,
    )
    jobs = session.scalars(
        select(Job)
        .where(Job.project_id == project.id, Job.status == JobStatus.succeeded)
        .order_by(Job.created_at.desc())
        .limit(50)
    ).all()
    return {
        "project": project,
        "deployments": [deployments.deployment_read(d) for d in rows],
        "jobs": [j for j in jobs if j.config.get("method") in deployments.SERVABLE],
    }


@router.get("/projects/{project_id}/deployments")
def deployments_page(
    project_id: uuid.UUID, request: Request, session: SessionDep, me: CurrentReader
) -> HTMLResponse:
    return render(request, "deploy/list.html", **_context(session, project_id, me))


@router.post("/projects/{project_id}/deployments")
def deploy(
    project_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    me: CurrentTrainer,
    form: Form,
) -> Response:
    try:
        body = DeploymentCreate(
            project_id=project_id,
            name=str(form.get("name", "")).strip(),
            job_ids=[uuid.UUID(str(v)) for v in form.getlist("job_id")],
        )
        deployment = deployments.create_deployment(
            session, settings=settings, data=body, user=me.user
        )
    except (ValidationError, ValueError, TunelabError) as exc:
        session.rollback()
        message = (
            exc.message
            if isinstance(exc, TunelabError)
            else ("name: lower-case letters, digits and dashes; and choose at least one job")
        )
        context = _context(session, project_id, me)
        return render(
            request, "deploy/list.html", 422, deploy_error=message, deploy_form=form, **context
        )
    session.commit()
    deployments.offer(session, deployment=deployment)
    return RedirectResponse(f"/deployments/{deployment.id}", status_code=303)


@router.get("/deployments/{deployment_id}")
def playground(
    deployment_id: uuid.UUID, request: Request, session: SessionDep, me: CurrentReader
) -> HTMLResponse:
    deployment = deployments.deployment_for(session, me.user, deployment_id)
    campaigns = session.scalars(
        select(ReviewCampaign)
        .where(
            ReviewCampaign.project_id == deployment.project_id, ReviewCampaign.status != "closed"
        )
        .order_by(ReviewCampaign.created_at.desc())
    ).all()
    return render(
        request,
        "deploy/playground.html",
        deployment=deployments.deployment_read(deployment),
        project=access.project_for(session, me.user, deployment.project_id),
        campaigns=campaigns,
    )


@router.post("/deployments/{deployment_id}/stop")
def undeploy(deployment_id: uuid.UUID, session: SessionDep, me: CurrentTrainer) -> Response:
    deployment = deployments.deployment_for(session, me.user, deployment_id)
    try:
        deployments.stop_deployment(session, deployment=deployment)
        session.commit()
    except TunelabError:
        session.rollback()
    return RedirectResponse(f"/projects/{deployment.project_id}/deployments", status_code=303)
