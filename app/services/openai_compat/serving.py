"""Fine-tuned models by their OpenAI names (``ft:<base>:<owner>:<suffix>:<id>``): listed in
``/v1/models``, answered by the deployment that serves the job's adapter, deployed on first
call when ``TUNELAB_AUTO_DEPLOY`` is on."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.errors import TunelabError
from app.models import Deployment, Job, JobStatus, OpenAIJob, User
from app.schemas.deploy import DeploymentCreate
from app.services import access, deployments
from app.services.openai_compat import names
from app.services.openai_compat.errors import OpenAIError, from_tunelab


@dataclass(frozen=True)
class Target:
    """Where a fine-tuned model's requests go, or why they cannot yet."""

    job_id: uuid.UUID
    project_id: uuid.UUID
    served_as: str | None  # "<deployment>/<adapter>", when a running deployment serves it
    deployment_id: uuid.UUID | None  # the deployment serving it or starting to


def listed(session: Session, user: User) -> list[dict[str, Any]]:
    """The succeeded API jobs' models the user can see, as ``/v1/models`` entries."""
    rows = session.execute(
        select(OpenAIJob, Job.finished_at)
        .join(Job, Job.id == OpenAIJob.job_id)
        .where(
            Job.status == JobStatus.succeeded,
            Job.project_id.in_(access.visible_projects(user)),
        )
        .order_by(Job.finished_at.desc())
    ).all()
    return [
        {
            "id": row.fine_tuned_model,
            "object": "model",
            "created": int((finished or row.created_at).timestamp()),
            "owned_by": row.owner,
        }
        for row, finished in rows
    ]


def deployment_name(job_id: uuid.UUID) -> str:
    return f"ft-{job_id.hex[:12]}"


def resolve(session: Session, user: User, model: str) -> Target:
    """The job behind ``model`` and the running deployment serving it, if any; 404 for a
    name that is not a visible fine-tuned model."""
    checkpoint = names.CHECKPOINT_SUFFIX.match(model)
    name = checkpoint.group("model") if checkpoint else model
    row = (
        session.scalar(select(OpenAIJob).where(OpenAIJob.fine_tuned_model == name))
        if "\x00" not in name
        else None
    )
    job = session.get(Job, row.job_id) if row is not None else None
    visible = False
    if job is not None:
        try:
            access.job_for(session, user, job.id)
            visible = True
        except TunelabError:
            visible = False
    if job is None or not visible or job.status != JobStatus.succeeded:
        raise OpenAIError(
            404,
            f"The model {model!r} does not exist or you do not have access to it; "
            "GET /v1/models lists yours",
            param="model",
            code="model_not_found",
        )
    if checkpoint:
        raise OpenAIError(
            409,
            f"{model!r} is a checkpoint: checkpoints are evaluated and exported from the job's "
            f"page (/jobs/{job.id}), not served; call {name!r}",
            param="model",
            code="checkpoint_not_served",
        )
    for deployment in deployments.running(session, user=user):
        for adapter in deployment.adapters:
            if adapter.get("job_id") == str(job.id):
                return Target(
                    job.id,
                    job.project_id,
                    f"{deployment.name}/{adapter['name']}",
                    deployment.id,
                )
    return Target(job.id, job.project_id, None, None)


def not_deployed(target: Target) -> OpenAIError:
    link = f"/projects/{target.project_id}/deployments"
    return OpenAIError(
        409,
        "this fine-tuned model is not deployed: deploy it from "
        f"{link} (or POST /api/v1/deployments with its job {target.job_id}), or start "
        "tunelab with TUNELAB_AUTO_DEPLOY=1 to deploy on first call",
        param="model",
        code="model_not_deployed",
        extra={"deployment_url": link, "job_id": str(target.job_id)},
    )


def start_deployment(session: Session, *, settings: Settings, user: User, target: Target) -> Target:
    """Deploy the job's adapter under ``ft-<id>`` (or find it starting); the caller commits,
    offers a new one, and waits with ``wait_running``."""
    name = deployment_name(target.job_id)
    existing = session.scalar(select(Deployment).where(Deployment.name == name))
    if existing is not None and existing.status in deployments.ACTIVE:
        return Target(target.job_id, target.project_id, None, existing.id)
    if existing is not None:
        deployments.delete_deployment(session, deployment=existing)
    try:
        made = deployments.create_deployment(
            session,
            settings=settings,
            data=DeploymentCreate(project_id=target.project_id, name=name, job_ids=[target.job_id]),
            user=user,
        )
    except TunelabError as exc:
        raise from_tunelab(exc) from None
    return Target(target.job_id, target.project_id, None, made.id)


def served_name(session: Session, deployment_id: uuid.UUID) -> str | None:
    """The adapter's model name once the deployment runs; raises when it ended."""
    deployment = session.get(Deployment, deployment_id)
    if deployment is None or deployment.status in ("stopped", "failed"):
        why = deployment.error if deployment is not None and deployment.error else "it stopped"
        raise OpenAIError(
            503,
            f"the automatic deployment did not start: {why}",
            kind="server_error",
            code="deployment_failed",
        )
    if deployment.status != "running":
        return None
    return deployments.served_names(deployment)[-1]


def deadline(settings: Settings) -> float:
    return time.monotonic() + settings.auto_deploy_timeout
