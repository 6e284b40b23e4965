"""Training jobs: creation, the state machine, and the lease that workers hold while running.

Every state change is a conditional UPDATE on the job row (``WHERE status = ...``), so a
cancel racing a claim, a message delivered twice, or a reaper racing a slow heartbeat each
resolve to exactly one winner without locks held across the network.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, object_session

from app.core.config import Settings, get_settings
from app.core.db import utcnow
from app.core.errors import Conflict, FieldError, InvalidInput, NotFound
from app.models import (
    Artifact,
    DatasetVersion,
    Evaluation,
    Job,
    JobEvent,
    JobStatus,
    MetricPoint,
    ModelPermission,
    User,
)
from app.schemas.job import JobCreate, JobRead
from app.services import access, leases, queue, workers
from app.services import datasets as datasets_service
from app.services.jobs import events
from app.services.jobs.base_models import check_base_model
from app.services.jobs.placement import place
from worker.spec.autoconfig import ConfigProblem, check_against_dataset
from worker.spec.catalog import catalog_entry
from worker.spec.config import TrainConfig
from worker.spec.method_support import check_method, model_type_of

ACTIVE = (JobStatus.validating_files, JobStatus.queued, JobStatus.running)


SERVER_SET_FIELDS = ("trust_remote_code", "allow_pickle_weights")


def validate_config(config: dict[str, Any]) -> TrainConfig:
    """Parse a run config, naming each bad field the way the form and YAML file name it."""
    try:
        return TrainConfig.model_validate(config)
    except ValidationError as exc:
        errors = [
            FieldError(
                field="config." + ".".join(str(p) for p in err["loc"]) if err["loc"] else "config",
                message=err["msg"],
            )
            for err in exc.errors()
        ]
        summary = "; ".join(f"{e.field}: {e.message}" for e in errors[:3])
        raise InvalidInput(f"the training config is not valid: {summary}", errors=errors) from None


def model_type_for(base_model: str) -> str | None:
    """The architecture of a base model when it can be known without loading it: from the
    catalog, or from a local folder's config.json. None for a hub id or a .gguf file.

    Only for a name ``check_base_model`` accepted: a local folder is then an absolute path
    inside an allowed folder."""
    entry = catalog_entry(base_model)
    if entry is not None:
        return entry.arch.model_type
    folder = Path(base_model.strip())
    return model_type_of(folder) if folder.is_absolute() and folder.is_dir() else None


def check_before_queueing(config: TrainConfig, *, settings: Settings, train_records: int) -> None:
    """Refuse, naming the field, what would only fail on the worker: a base model that is not
    a catalog name, a hub id or a path inside an allowed model folder, a method the model's
    architecture or the workers' hardware cannot run, or more samples per step than the
    training split holds."""
    check_base_model(config.base_model, settings=settings)
    problem = check_method(
        config.method,
        model_type=model_type_for(config.base_model),
        cuda_available=settings.workers_have_cuda,
    )
    if problem:
        raise InvalidInput(
            f"config.method: {problem}",
            errors=[FieldError(field="config.method", message=problem)],
        )
    try:
        check_against_dataset(config, dataset_records=train_records)
    except ConfigProblem as exc:
        raise InvalidInput(
            f"config.{exc.field}: {exc.reason}",
            errors=[FieldError(field=f"config.{exc.field}", message=exc.reason)],
        ) from None


def create_job(session: Session, *, settings: Settings, data: JobCreate, user: User) -> Job:
    """Validate the request and its files, and leave the job ``queued`` (not yet enqueued)."""
    project = access.project_for(session, user, data.project_id)
    dataset = access.dataset_for(session, user, data.dataset_id)
    if dataset.project_id != project.id:
        raise NotFound("dataset not found in this project")
    config = validate_config(data.config)
    check_model_permissions(session, config=config)
    if config.system_prompt is None and project.system_prompt:
        config.system_prompt = project.system_prompt
    version = datasets_service.version_of(dataset, data.dataset_version)
    check_before_queueing(
        config,
        settings=settings,
        train_records=datasets_service.split_counts(version).get("train", version.records),
    )
    placement = place(config, settings=settings, version=version)

    job = Job(
        project_id=project.id,
        dataset_id=dataset.id,
        dataset_version_id=version.id,
        config=config.model_dump(mode="json"),
        status=JobStatus.validating_files,
        queue=placement.queue,
        result={},
        evaluate_after=data.evaluate,
        created_by_id=user.id,
    )
    session.add(job)
    session.flush()
    add_event(session, job_id=job.id, message=events.JOB_CREATED, params={})

    records = datasets_service.records_file(settings, version)
    if not records.is_file():
        job.status = JobStatus.failed
        job.finished_at = utcnow()
        job.error = events.DATA_MISSING % {"version": version.number}
        add_event(
            session,
            job_id=job.id,
            level="error",
            message=events.DATA_MISSING,
            params={"version": version.number},
        )
        return job

    job.status = JobStatus.queued
    job.queued_at = utcnow()
    add_event(
        session,
        job_id=job.id,
        message=events.FILES_VALIDATED,
        params={"records": version.records, "queue": job.queue},
    )
    if placement.needs is not None and not workers.serves(
        workers.online(session, settings=settings), job.queue
    ):
        add_event(
            session,
            job_id=job.id,
            level="warning",
            message=events.NO_WORKER_YET,
            params={"queue": job.queue},
        )
    session.flush()
    return job


def check_model_permissions(session: Session, *, config: TrainConfig) -> None:
    """Fill in what an admin allowed for this base model; refuse what a user asked for alone.

    Running a model's own code or unpickling its weights can execute anything on the worker,
    so only an admin's entry for that exact model name turns either on.
    """
    asked = {name for name in SERVER_SET_FIELDS if getattr(config, name, False)}
    permission = session.scalar(
        select(ModelPermission).where(ModelPermission.model == config.base_model)
    )
    allowed = {
        name for name in SERVER_SET_FIELDS if permission is not None and getattr(permission, name)
    }
    refused = asked - allowed
    if refused:
        raise InvalidInput(
            "an admin must allow this for the model first",
            errors=[
                FieldError(
                    field=f"config.{name}", message="only an admin can allow this, per model"
                )
                for name in sorted(refused)
            ],
        )
    for name in allowed:
        setattr(config, name, True)


def get_job(session: Session, *, job_id: uuid.UUID) -> Job:
    """Return the job or raise NotFound."""
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound("job not found")
    return job


def list_jobs(
    session: Session,
    *,
    user: User,
    limit: int,
    offset: int,
    project_id: uuid.UUID | None = None,
    status: str | None = None,
) -> tuple[list[Job], int]:
    """The jobs ``user`` may see, newest first, optionally for one project or one status."""
    conditions: list[ColumnElement[bool]] = [Job.project_id.in_(access.visible_projects(user))]
    if project_id is not None:
        conditions.append(Job.project_id == project_id)
    if status is not None:
        conditions.append(Job.status == status)
    total = session.scalar(select(func.count()).select_from(Job).where(*conditions)) or 0
    rows = session.scalars(
        select(Job)
        .where(*conditions)
        .order_by(Job.created_at.desc(), Job.id)
        .limit(limit)
        .offset(offset)
    ).all()
    return list(rows), total


def cancel_job(session: Session, *, job_id: uuid.UUID) -> Job:
    """Cancel a waiting job at once; ask a running job's worker to stop at its next step."""
    job = get_job(session, job_id=job_id)
    done = leases.cancel(session, leases.JOB, job_id)
    if done is None:
        session.refresh(job)
        raise Conflict(f"the job has already {job.status} and cannot be cancelled")
    message = events.CANCELLED_BEFORE_START if done == "cancelled" else events.CANCEL_REQUESTED
    add_event(session, job_id=job_id, message=message, params={})
    session.flush()
    session.refresh(job)
    return job


CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
# What a stopped job can carry on from: cancelled, or failed (its checkpoints stay, see
# worker.tasks.training).
STOPPED = (JobStatus.failed, JobStatus.cancelled)


def newest_checkpoint(settings: Settings, job_id: uuid.UUID) -> Path | None:
    """The job's newest finished checkpoint (staging folders start with a dot), or None."""
    folder = checkpoints_dir(settings, job_id)
    if not folder.is_dir():
        return None
    steps = [
        (int(m.group(1)), p)
        for p in folder.iterdir()
        if p.is_dir() and (m := CHECKPOINT_NAME.match(p.name))
    ]
    return max(steps)[1] if steps else None


def resume_job(session: Session, *, settings: Settings, job_id: uuid.UUID) -> Job:
    """Queue a cancelled or failed job again; its worker carries on from the newest
    checkpoint (see worker.tasks.training), so the steps already trained are not repeated."""
    job = get_job(session, job_id=job_id)
    if job.status not in STOPPED:
        raise Conflict(f"the job has {job.status}; only a cancelled or failed job can resume")
    checkpoint = newest_checkpoint(settings, job.id)
    if checkpoint is None:
        raise Conflict("the job saved no checkpoint to resume from; start a new job instead")
    queued = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status.in_(STOPPED))
        .values(
            status=JobStatus.queued,
            worker=None,
            heartbeat_at=None,
            cancel_requested_at=None,
            finished_at=None,
            error=None,
            # A resumed job gets its attempts afresh: the reaper counts lost workers of this
            # run, not of the one that was stopped.
            attempts=0,
            queued_at=utcnow(),
            offered_at=None,
        )
    )
    if not queued.rowcount:  # type: ignore[attr-defined]
        raise Conflict("the job changed meanwhile; read it again")
    add_event(
        session, job_id=job.id, message=events.RESUMED, params={"checkpoint": checkpoint.name}
    )
    session.flush()
    session.refresh(job)
    return job


def queue_position(session: Session, *, job: Job) -> int:
    """How many jobs of the same queue wait or run ahead of this queued one."""
    ahead = session.scalar(
        select(func.count())
        .select_from(Job)
        .where(
            Job.queue == job.queue,
            Job.id != job.id,
            Job.status.in_((JobStatus.queued, JobStatus.running)),
            func.coalesce(Job.queued_at, Job.created_at)
            <= func.coalesce(job.queued_at, job.created_at),
        )
    )
    return int(ahead or 0)


def list_events(
    session: Session, *, job_id: uuid.UUID, after_id: int = 0, limit: int = 500
) -> list[JobEvent]:
    """Events in order; pass the last seen id to get only newer ones."""
    return list(
        session.scalars(
            select(JobEvent)
            .where(JobEvent.job_id == job_id, JobEvent.id > after_id)
            .order_by(JobEvent.id)
            .limit(limit)
        ).all()
    )


def list_metrics(
    session: Session,
    *,
    job_id: uuid.UUID,
    name: str | None = None,
    after_step: int = -1,
    limit: int = 10_000,
) -> list[MetricPoint]:
    """Metric points ordered by step; filter by name or ask only for steps after one."""
    conditions = [MetricPoint.job_id == job_id, MetricPoint.step > after_step]
    if name is not None:
        conditions.append(MetricPoint.name == name)
    return list(
        session.scalars(
            select(MetricPoint)
            .where(*conditions)
            .order_by(MetricPoint.step, MetricPoint.name)
            .limit(limit)
        ).all()
    )


def list_artifacts(session: Session, *, job_id: uuid.UUID) -> list[Artifact]:
    return list(
        session.scalars(
            select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.created_at)
        ).all()
    )


def model_artifact(session: Session, *, job_id: uuid.UUID) -> Artifact | None:
    """The model a succeeded job produced (its adapter, or all weights for full tuning)."""
    return session.scalar(
        select(Artifact)
        .where(Artifact.job_id == job_id, Artifact.kind == "adapter")
        .order_by(Artifact.created_at.desc())
        .limit(1)
    )


def add_event(
    session: Session,
    *,
    job_id: uuid.UUID,
    message: str,
    level: str = "info",
    data: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
) -> None:
    """A job event. With ``params`` (``{}`` for none), ``message`` is a message id marked for
    the catalog: stored filled in, in English, its id and values kept in ``data`` so that pages
    show it in their reader's language (app/services/jobs/events.py)."""
    text, keep = events.stored(message, params)
    if keep is not None:
        data = {**(data or {}), **keep}
    session.add(JobEvent(job_id=job_id, level=level, message=text, data=data, created_at=utcnow()))


# --- The worker's side: what a training attempt needs, its steps, its outcome --------------
# (claiming, heart-beating, finishing and reaping are the lease's: app.services.leases)


@dataclass(frozen=True)
class TrainingPlan:
    """What one attempt at a job reads and where it writes."""

    config: dict[str, Any]
    records: Path  # the training split, JSONL
    validation: Path | None
    output: Path  # the model, written by this attempt only
    checkpoints: Path  # shared by the job's attempts


def checkpoints_dir(settings: Settings, job_id: uuid.UUID | str) -> Path:
    """Where a job's checkpoints live: shared by its attempts, so a re-queued job resumes
    from the newest one whichever worker picks it up."""
    return settings.runs_dir / str(job_id) / "checkpoints"


def training_plan(session: Session, *, settings: Settings, job: Job) -> TrainingPlan:
    version = job_dataset_version(session, job=job)
    validation = datasets_service.split_files(settings, version).get("validation")
    return TrainingPlan(
        config=dict(job.config),
        records=settings.data_dir / version.records_path,
        validation=validation if validation is not None and validation.is_file() else None,
        # One folder per attempt, so a worker that lost its lease and a new one never share
        # files.
        output=settings.artifacts_dir / str(job.id) / f"attempt-{job.attempts}" / "adapter",
        checkpoints=checkpoints_dir(settings, job.id),
    )


def record_step(
    session: Session,
    *,
    job_id: uuid.UUID,
    step: int,
    total_steps: int,
    values: dict[str, float],
) -> None:
    """Store one step's metrics (the caller holds the job's lease).

    A job resumed from a checkpoint trains again the steps after it, which its earlier
    attempt may have recorded: those points are overwritten, so each step has one value per
    metric, the one of the run that went on to finish.
    """
    now = utcnow()
    session.execute(
        update(Job).where(Job.id == job_id).values(current_step=step, total_steps=total_steps)
    )
    rows = [
        {"job_id": job_id, "step": step, "name": name, "value": float(value), "created_at": now}
        for name, value in values.items()
    ]
    if rows:
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        statement = insert(MetricPoint).values(rows)
        session.execute(
            statement.on_conflict_do_update(
                index_elements=["job_id", "name", "step"],
                set_={
                    "value": statement.excluded.value,
                    "created_at": statement.excluded.created_at,
                },
            )
        )


def outcome_message(status: str, error: str | None) -> str:
    return {
        JobStatus.succeeded: "Succeeded",
        JobStatus.cancelled: "Cancelled",
        JobStatus.failed: f"Failed: {error}",
    }.get(JobStatus(status), str(status))


def record_success(
    session: Session, *, settings: Settings, job_id: uuid.UUID, result: Any
) -> Evaluation | None:
    """Store a succeeded job's model and summary (in the transaction that ends its lease);
    returns the evaluation it queues for itself, to be offered once committed."""
    files = sorted(p for p in result.adapter_dir.rglob("*") if p.is_file())
    artifact = store_artifact(
        session,
        job_id=job_id,
        kind="adapter",
        path=str(result.adapter_dir.relative_to(settings.data_dir)),
        size_bytes=sum(p.stat().st_size for p in files),
        files=[str(p.relative_to(result.adapter_dir)) for p in files],
    )
    summary: dict[str, Any] = {
        "steps": result.steps,
        "final_loss": result.final_loss,
        "train_seconds": round(result.train_seconds, 2),
        "tokens": result.tokens,
        "artifact_id": str(artifact.id),
    }
    if result.best_step is not None:
        summary.update(
            best_step=result.best_step,
            best_val_loss=result.best_val_loss,
            stopped_early=result.stopped_early,
        )
    session.execute(update(Job).where(Job.id == job_id).values(result=summary))
    job = session.get(Job, job_id)
    if job is None:
        return None
    from app.services.evaluations import evaluation_after_job

    return evaluation_after_job(session, settings=settings, job=job)


def store_artifact(
    session: Session, *, job_id: uuid.UUID, kind: str, path: str, size_bytes: int, files: list[str]
) -> Artifact:
    artifact = Artifact(job_id=job_id, kind=kind, path=path, size_bytes=size_bytes, files=files)
    session.add(artifact)
    session.flush()
    return artifact


def job_dataset_version(session: Session, *, job: Job) -> DatasetVersion:
    version = session.get(DatasetVersion, job.dataset_version_id)
    if version is None:
        raise NotFound("the job's dataset version no longer exists")
    return version


def offer(session: Session, *, job: Job) -> None:
    """Hand a committed, queued job to the broker. Should the broker be down, the job still
    waits, and says so: a worker sends it again once the broker is back."""
    if job.status != JobStatus.queued:
        return
    if not queue.offer(session, leases.JOB, job.id, job.queue):
        add_event(
            session,
            job_id=job.id,
            level="warning",
            message=events.QUEUE_UNREACHABLE,
            params={},
        )
        session.commit()


LIVE_METRICS = ("epoch", "tokens_per_second", "eta_seconds", "gpu_memory_bytes")


def job_read(job: Job) -> JobRead:
    progress = 0.0
    if job.status == JobStatus.succeeded:
        progress = 1.0
    elif job.total_steps:
        progress = min(1.0, job.current_step / job.total_steps)
    update: dict[str, Any] = {"progress": progress}
    session = object_session(job)
    if job.status == JobStatus.running and job.current_step and session is not None:
        latest = session.execute(
            select(MetricPoint.name, MetricPoint.value).where(
                MetricPoint.job_id == job.id,
                MetricPoint.step == job.current_step,
                MetricPoint.name.in_(LIVE_METRICS),
            )
        ).all()
        update.update({name: value for name, value in latest})
        if "gpu_memory_bytes" in update:
            update["gpu_memory_bytes"] = int(update["gpu_memory_bytes"])
    if job.status in STOPPED:
        # What was trained before the job stopped: it can be resumed or exported.
        checkpoint = newest_checkpoint(get_settings(), job.id)
        update["checkpoint"] = checkpoint.name if checkpoint is not None else None
    if job.status == JobStatus.queued and session is not None:
        update["jobs_ahead"] = queue_position(session, job=job)
        update["waiting_reason"] = workers.waiting_reason(
            session, settings=get_settings(), queue=job.queue
        )
    return JobRead.model_validate(job).model_copy(update=update)
