"""Deployments: a base model and adapters served by a worker, reached through tunelab's
OpenAI-compatible ``/v1`` endpoint with tunelab's own token rules.

The worker runs the model server for as long as the deployment is wanted; the web process
never loads a model, it forwards each request to the worker's server with a per-deployment key
that only tunelab knows.
"""

from __future__ import annotations

import secrets
import uuid

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.db import utcnow
from app.core.errors import Conflict, InvalidInput, NotFound
from app.models import Deployment, Job, JobStatus, User
from app.schemas.deploy import DeploymentCreate, DeploymentRead
from app.services import access, leases, queue
from app.services import jobs as jobs_service

ACTIVE = ("starting", "running", "stopping")
SERVABLE = ("lora", "qlora", "ia3")  # adapters that can share one loaded base model


def served_names(deployment: Deployment) -> list[str]:
    """The `model` names clients send: the base model and each adapter, under the name."""
    return [f"{deployment.name}/base"] + [
        f"{deployment.name}/{a['name']}" for a in deployment.adapters
    ]


def deployment_read(deployment: Deployment) -> DeploymentRead:
    read = DeploymentRead.model_validate(deployment)
    read.models = served_names(deployment) if deployment.status == "running" else []
    return read


def create_deployment(
    session: Session, *, settings: Settings, data: DeploymentCreate, user: User
) -> Deployment:
    """Validate the jobs (succeeded, one base model, adapters that can share it) and leave
    the deployment starting; the caller sends it to a worker after the commit."""
    project = access.project_for(session, user, data.project_id)
    taken = session.scalar(select(Deployment.id).where(Deployment.name == data.name))
    if taken is not None:
        raise Conflict(
            f"a deployment named {data.name!r} exists; stop and delete it, or pick another"
        )
    adapters: list[dict[str, str]] = []
    bases: set[str] = set()
    # Served where its first job trained: a worker of that job's capacity class.
    queue = settings.default_queue
    for index, job_id in enumerate(dict.fromkeys(data.job_ids)):
        field = f"job_ids.{index}"
        job = session.get(Job, job_id)
        if job is None or job.project_id != project.id:
            raise NotFound("job not found in this project")
        if job.status != JobStatus.succeeded:
            raise InvalidInput.on(
                field, f"job {str(job.id)[:8]} has {job.status}; it has no model yet"
            )
        method = str(job.config.get("method"))
        if method not in SERVABLE:
            reason = (
                "prefix-tuning and P-tuning adapters change the input, not the weights, and "
                "cannot share a base model with others"
                if method in ("prefix_tuning", "p_tuning")
                else "a fully fine-tuned model is a model of its own; export it merged and "
                "serve it with vLLM"
            )
            raise InvalidInput.on(
                field, f"job {str(job.id)[:8]} ({method}) cannot be served here: {reason}"
            )
        artifact = jobs_service.model_artifact(session, job_id=job.id)
        if artifact is None:
            raise InvalidInput.on(field, "the job's adapter files are gone")
        if not adapters:
            queue = job.queue
        bases.add(str(job.config["base_model"]))
        adapters.append(
            {"name": f"job-{str(job.id)[:8]}", "job_id": str(job.id), "path": artifact.path}
        )
    if len(bases) != 1:
        raise InvalidInput.on(
            "job_ids", f"one deployment serves one base model; these use {sorted(bases)}"
        )
    deployment = Deployment(
        project_id=project.id,
        name=data.name,
        base_model=bases.pop(),
        adapters=adapters,
        status="starting",
        queue=queue,
        queued_at=utcnow(),
        api_key=secrets.token_urlsafe(32),
        created_by_id=user.id,
    )
    session.add(deployment)
    session.flush()
    return deployment


def deployment_for(session: Session, user: User, deployment_id: uuid.UUID) -> Deployment:
    deployment = session.get(Deployment, deployment_id)
    if deployment is None:
        raise NotFound("deployment not found")
    access.project_for(session, user, deployment.project_id)
    return deployment


def list_deployments(
    session: Session, *, user: User, project_id: uuid.UUID | None, limit: int, offset: int
) -> tuple[list[Deployment], int]:
    conditions: list[ColumnElement[bool]] = [
        Deployment.project_id.in_(access.visible_projects(user))
    ]
    if project_id is not None:
        conditions.append(Deployment.project_id == project_id)
    total = session.scalar(select(func.count()).select_from(Deployment).where(*conditions))
    rows = session.scalars(
        select(Deployment)
        .where(*conditions)
        .order_by(Deployment.created_at.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return list(rows), total or 0


def stop_deployment(session: Session, *, deployment: Deployment) -> Deployment:
    """Undeploy: one still waiting for a worker stops at once; a loading or running one's
    worker stops serving within seconds."""
    done = leases.cancel(session, leases.DEPLOYMENT, deployment.id)
    if done is None:
        session.refresh(deployment)
        raise Conflict(f"the deployment is already {deployment.status}")
    if done == "asked":
        session.execute(
            update(Deployment)
            .where(Deployment.id == deployment.id, Deployment.status.in_(ACTIVE))
            .values(status="stopping")
        )
    session.flush()
    session.refresh(deployment)
    return deployment


def offer(session: Session, *, deployment: Deployment) -> None:
    """Hand a committed deployment to the broker; should it be down, the deployment waits
    and is sent as soon as the broker is back."""
    queue.offer(session, leases.DEPLOYMENT, deployment.id, deployment.queue)


def delete_deployment(session: Session, *, deployment: Deployment) -> None:
    if deployment.status in ACTIVE:
        raise Conflict("stop the deployment first")
    session.delete(deployment)
    session.flush()


def running_for_model(session: Session, *, user: User, model: str) -> tuple[Deployment, str] | None:
    """The running deployment serving ``model`` ("<deployment>/<name>") that ``user`` may use."""
    name, _, _ = model.partition("/")
    deployment = session.scalar(
        select(Deployment).where(
            Deployment.name == name,
            Deployment.status == "running",
            Deployment.project_id.in_(access.visible_projects(user)),
        )
    )
    if deployment is None or model not in served_names(deployment):
        return None
    return deployment, model


def running(session: Session, *, user: User) -> list[Deployment]:
    return list(
        session.scalars(
            select(Deployment)
            .where(
                Deployment.status == "running",
                Deployment.project_id.in_(access.visible_projects(user)),
            )
            .order_by(Deployment.name)
        ).all()
    )


# --- The worker's side (the lease itself is app.services.leases') ----------------------------


def mark_running(session: Session, deployment_id: uuid.UUID, *, url: str) -> None:
    """The model server answers at ``url`` (the worker holds the deployment's lease)."""
    session.execute(
        update(Deployment)
        .where(Deployment.id == deployment_id, Deployment.status == "starting")
        .values(status="running", url=url, progress={})
    )
