"""Exports of a job's model (adapter or merged), made by a worker and downloaded as .tar."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.config import get_settings
from app.core.db import utcnow
from app.core.errors import Conflict, FieldError, InvalidInput, NotFound
from app.core.i18n import _
from app.models import Export, Job, JobStatus, User
from app.schemas.deploy import ExportRead
from app.services import access, leases, queue, workers
from app.services import evaluations as evaluations_service
from app.services import jobs as jobs_service

KINDS = ("adapter", "merged")
PROMPT_LEARNING = ("prefix_tuning", "p_tuning")


def create_export(
    session: Session, *, job_id: uuid.UUID, kind: str, dtype: str, user: User
) -> Export:
    """Queue an export of a succeeded job; refuses what cannot be made, saying why."""
    job = access.job_for(session, user, job_id)
    if kind not in KINDS:
        raise InvalidInput(
            f"kind: {kind!r} is not an export",
            errors=[FieldError(field="kind", message="adapter or merged")],
        )
    # A cancelled or failed job exports what it trained up to its newest checkpoint: the
    # worker turns that checkpoint into an adapter first (worker.deploy.from_checkpoint).
    from_checkpoint = job.status in jobs_service.STOPPED and (
        jobs_service.newest_checkpoint(get_settings(), job.id) is not None
    )
    if job.status != JobStatus.succeeded and not from_checkpoint:
        raise Conflict(
            f"the job has {job.status} and saved no checkpoint; only a succeeded job, or a "
            "stopped one with a checkpoint, has a model to export"
        )
    method = str(job.config.get("method", "lora"))
    if kind == "merged" and method in PROMPT_LEARNING:
        message = (
            f"{method.replace('_', '-')} adds virtual tokens instead of changing weights, so "
            "it cannot be merged; export the adapter"
        )
        raise InvalidInput.on("kind", message, detail=message)
    if kind == "adapter" and method == "full":
        message = "this job fine-tuned every weight: there is no adapter; export it merged"
        raise InvalidInput.on("kind", message, detail=message)
    if not from_checkpoint and jobs_service.model_artifact(session, job_id=job.id) is None:
        raise Conflict("the job's model files are gone")
    export = Export(
        job_id=job.id,
        kind=kind,
        dtype=dtype,
        status="queued",
        queue=job.queue,
        queued_at=utcnow(),
        created_by_id=user.id,
    )
    session.add(export)
    session.flush()
    return export


def export_for(session: Session, user: User, export_id: uuid.UUID) -> Export:
    export = session.get(Export, export_id)
    if export is None:
        raise NotFound("export not found")
    access.job_for(session, user, export.job_id)
    return export


def list_exports(session: Session, *, job_id: uuid.UUID) -> list[Export]:
    return list(
        session.scalars(
            select(Export).where(Export.job_id == job_id).order_by(Export.created_at.desc())
        ).all()
    )


def offer(session: Session, *, export: Export) -> None:
    """Hand a committed export to the broker; should it be down, the export waits and is
    sent as soon as the broker is back."""
    queue.offer(session, leases.EXPORT, export.id, export.queue)


def export_read(session: Session, export: Export) -> ExportRead:
    """The API view of an export; a queued one that no online worker can make says why."""
    read = ExportRead.model_validate(export)
    if export.status == "queued":
        read.waiting_reason = workers.waiting_reason(
            session, settings=get_settings(), queue=export.queue, kind="export"
        )
    return read


def waiting_for(session: Session, *, export: Export) -> str:
    """Why a queued export has not started, in words: no online worker that can make it,
    else the work that holds the workers of its queue (a deployment keeps its worker until it
    is stopped), else a free worker."""
    missing = workers.waiting_reason(
        session, settings=get_settings(), queue=export.queue, kind="export"
    )
    if missing is not None:
        return missing
    holders: list[str] = []
    for kind in leases.kinds():
        rows = session.scalars(
            select(kind.model)
            .where(
                kind.col("queue") == export.queue,
                kind.col("status").in_(kind.held),
                kind.col("id") != export.id,
            )
            .limit(5)
        ).all()
        for row in rows:
            short = str(getattr(row, "id", ""))[:8]
            if kind is leases.DEPLOYMENT:
                holders.append(
                    _(
                        "deployment “%(name)s”, which keeps its worker until it is stopped",
                        name=getattr(row, "name", short),
                    )
                )
            elif kind is leases.JOB:
                holders.append(_("training job %(id)s", id=short))
            elif kind is leases.EVALUATION:
                holders.append(_("evaluation %(id)s", id=short))
            elif kind is leases.EXPORT:
                holders.append(_("export %(id)s", id=short))
            else:
                holders.append(_("answers for a review campaign"))
    if not holders:
        return _("waiting for a free worker")
    return _("waiting for %(work)s", work=_("; ").join(holders))


def card_data(session: Session, *, job: Job) -> dict[str, Any]:
    """What the model card says of a job: its model, data, and newest evaluation."""
    from app.models import Dataset, DatasetVersion, EvalStatus, Evaluation, Project
    from worker.spec.catalog import catalog_entry

    project = session.get(Project, job.project_id)
    version = session.get(DatasetVersion, job.dataset_version_id)
    dataset = session.get(Dataset, job.dataset_id)
    entry = catalog_entry(str(job.config.get("base_model")))
    evaluation = session.scalar(
        select(Evaluation)
        .where(Evaluation.job_id == job.id, Evaluation.status == EvalStatus.succeeded)
        .order_by(Evaluation.finished_at.desc())
        .limit(1)
    )
    evaluation_data: dict[str, Any] = {}
    if evaluation is not None and project is not None:
        read = evaluations_service.evaluation_read(evaluation, project)
        evaluation_data = {
            "id": str(evaluation.id),
            "results": read.results,
            "verdict": read.verdict,
        }
    return {
        "name": f"{project.name if project else 'tunelab'} — job {str(job.id)[:8]}",
        "task": project.task_description if project else "",
        "base_model": job.config.get("base_model"),
        "base_title": entry.title if entry else None,
        "base_hub_id": entry.hub_id if entry else None,
        "license": entry.licence if entry else None,
        "method": job.config.get("method"),
        "method_title": evaluations_service.method_title(str(job.config.get("method"))),
        "lora_rank": job.config.get("lora_r")
        if isinstance(job.config.get("lora_r"), int)
        else None,
        "job_id": str(job.id),
        "steps": (job.result or {}).get("steps"),
        "final_loss": (job.result or {}).get("final_loss"),
        "served_name": f"job-{str(job.id)[:8]}",
        "dataset": {
            "name": dataset.name if dataset else "?",
            "version": version.number if version else "?",
            "records": version.records if version else "?",
            "format": version.format if version else "?",
            "split": (version.split or {}).get("counts") if version else {},
        },
        "evaluation": evaluation_data,
    }


def check_prompts(session: Session, *, job: Job, limit: int = 4) -> list[list[dict[str, Any]]]:
    """Prompts a merged export is checked on: the first test prompts of the job's newest
    evaluation (the prompts it was measured on), if it has one."""
    from app.models import EvalSample, EvalStatus, Evaluation

    evaluation_id = session.scalar(
        select(Evaluation.id)
        .where(Evaluation.job_id == job.id, Evaluation.status == EvalStatus.succeeded)
        .order_by(Evaluation.finished_at.desc())
        .limit(1)
    )
    if evaluation_id is None:
        return []
    return [
        list(messages)
        for messages in session.scalars(
            select(EvalSample.messages)
            .where(EvalSample.evaluation_id == evaluation_id)
            .order_by(EvalSample.position)
            .limit(limit)
        ).all()
    ]
