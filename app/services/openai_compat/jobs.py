"""``/v1/fine_tuning/jobs``: OpenAI's job requests as tunelab jobs, and tunelab jobs as
OpenAI's job objects, events, checkpoints and results file.

A job made here is a normal tunelab job in a project (``metadata.project``, by id or name, or
the caller's API project), trained on a dataset version made from its files, shown in the
browser with its chart and evaluation like any other.

**learning_rate_multiplier.** The engine's learning rate is the multiplier times the rate
tunelab would choose by itself for the method and the model's size
(``worker.spec.autoconfig``: 2e-4 for LoRA under 20B parameters, 1e-4 from 20B; a model off
the catalog counts as 1B): ``learning_rate = learning_rate_multiplier × base rate``, so 1
means tunelab's own choice and ``auto`` leaves the choice to it.
"""

from __future__ import annotations

import io
import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from app.core.config import Settings, get_settings
from app.core.csv_cells import safe_writer
from app.core.db import utcnow
from app.core.errors import InvalidDataset, TunelabError
from app.models import (
    Dataset,
    DatasetUpload,
    DatasetVersion,
    Job,
    JobEvent,
    JobStatus,
    MetricPoint,
    OpenAIFile,
    OpenAIJob,
    Project,
    UploadStatus,
    User,
)
from app.schemas.dataset import ImportRequest, SplitOptions
from app.schemas.job import JobCreate
from app.services import access, leases
from app.services import jobs as jobs_service
from app.services.datasets import imports
from app.services.evaluations import list_checkpoints
from app.services.jobs import events as job_events
from app.services.openai_compat import files, names
from app.services.openai_compat.errors import OpenAIError, from_tunelab
from app.services.openai_compat.file_format import FEATURE_NOTES
from worker.spec.autoconfig import resolve_auto
from worker.spec.catalog import CATALOG, catalog_entry
from worker.spec.config import TrainConfig

DEFAULT_METHOD = "lora"
# OpenAI's own models (and fine-tunes of them) cannot be trained here.
OPENAI_MODEL = re.compile(
    r"^(gpt-|chatgpt|o\d|davinci|babbage|text-|ft:gpt|ft:davinci|ft:babbage)", re.IGNORECASE
)
SUFFIX = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# OpenAI's hyper-parameters and how a tunelab config field is named back in their words.
PARAM_OF_FIELD = {
    "config.base_model": "model",
    "config.epochs": "hyperparameters.n_epochs",
    "config.batch_size": "hyperparameters.batch_size",
    "config.learning_rate": "hyperparameters.learning_rate_multiplier",
    "config.seed": "seed",
}


# --- The request ---------------------------------------------------------------------------


class Hyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_epochs: Literal["auto"] | Annotated[int, Field(ge=1, le=50)] = "auto"
    batch_size: Literal["auto"] | Annotated[int, Field(ge=1, le=256)] = "auto"
    learning_rate_multiplier: Literal["auto"] | Annotated[float, Field(gt=0, le=10)] = "auto"


class DpoHyperparameters(Hyperparameters):
    beta: Literal["auto"] | Annotated[float, Field(gt=0, le=2)] = "auto"


class Supervised(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)


class Dpo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hyperparameters: DpoHyperparameters = Field(default_factory=DpoHyperparameters)


class Method(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: Supervised | None = None
    dpo: Dpo | None = None
    reinforcement: dict[str, Any] | None = None


class JobRequest(BaseModel):
    """``POST /v1/fine_tuning/jobs``; ``test_file`` and ``tunelab_config`` are tunelab's."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=500)
    training_file: str = Field(min_length=1, max_length=100)
    validation_file: str | None = Field(None, max_length=100)
    hyperparameters: Hyperparameters | None = None
    method: Method | None = None
    suffix: str | None = Field(None, max_length=64)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(None, max_length=16)
    integrations: list[dict[str, Any]] | None = None
    # tunelab's additions: held-out questions with reference answers (the evaluation's data),
    # and run-config fields the OpenAI request cannot say (max_steps, method, lora_r, …).
    test_file: str | None = Field(None, max_length=100)
    tunelab_config: dict[str, Any] | None = None


def parse_request(body: Any) -> JobRequest:
    """The request, or OpenAI's error naming the first bad field (for a value that may be
    "auto" or a number, the number's problem: "auto" is rarely what was meant)."""
    if _has_nul(body):
        raise OpenAIError(400, "the request holds a NUL character", code="invalid_request")
    try:
        return JobRequest.model_validate(body)
    except ValidationError as exc:
        errors = exc.errors()
        error = next(
            (e for e in errors if not (e["loc"] and str(e["loc"][-1]).startswith("literal["))),
            errors[0],
        )
        param = ".".join(str(p) for p in error["loc"] if not _union_branch(p))
        raise OpenAIError(
            400,
            f"{param or 'the request'}: {error['msg']}",
            param=param or None,
            code="invalid_request",
        ) from None


def _has_nul(value: Any) -> bool:
    """Text the database cannot store, anywhere in a JSON value."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _union_branch(part: Any) -> bool:
    """A location part naming a branch of a union type, not a field."""
    return isinstance(part, str) and (
        part.startswith(("literal[", "constrained-", "function-"))
        or part in ("int", "float", "str", "bool")
    )


def base_learning_rate(model: str, method: str) -> float:
    """The rate a multiplier of 1 means: tunelab's own choice for this method and model."""
    entry = catalog_entry(model)
    try:
        config = TrainConfig.model_validate({"base_model": model, "method": method})
    except ValidationError:
        config = TrainConfig.model_validate({"base_model": model, "method": DEFAULT_METHOD})
    resolved = resolve_auto(
        config,
        model_params=entry.params if entry else None,
        dataset_records=None,
        cpu=not get_settings().workers_have_cuda,
    )
    return float(resolved.learning_rate)


def training_config(request: JobRequest) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """The tunelab run config of an OpenAI request, the method as the job object shows it,
    and what has no equivalent here."""
    method = request.method or Method(type="supervised")
    if method.type != "supervised":
        what = "DPO (preference tuning)" if method.type == "dpo" else "reinforcement fine-tuning"
        raise OpenAIError(
            400,
            f"method.type {method.type!r}: {what} is not available in tunelab yet; use "
            "method.type 'supervised'",
            param="method.type",
            code="unsupported_method",
        )
    hyper = (
        method.supervised.hyperparameters
        if method.supervised is not None
        else request.hyperparameters or Hyperparameters()
    )
    if OPENAI_MODEL.match(request.model):
        raise OpenAIError(
            400,
            f"{request.model!r} is one of OpenAI's models and cannot be fine-tuned here. "
            f"Fine-tune an open model instead, e.g. {', '.join(open_alternatives())}; "
            "GET /api/v1/models lists the catalog, and any hub id or allowed local folder "
            "works too",
            param="model",
            code="model_not_available",
        )
    if request.model.startswith("ft:"):
        raise OpenAIError(
            400,
            "continuing from a fine-tuned model is not available here; name its base model",
            param="model",
            code="model_not_available",
        )
    extra = dict(request.tunelab_config or {})
    config: dict[str, Any] = {"method": DEFAULT_METHOD, **extra, "base_model": request.model}
    notes: list[str] = []
    if "epochs" not in extra and "max_steps" not in extra:
        config["epochs"] = hyper.n_epochs
    if "batch_size" not in extra:
        config["batch_size"] = hyper.batch_size
    if "learning_rate" not in extra:
        multiplier = hyper.learning_rate_multiplier
        config["learning_rate"] = (
            "auto"
            if multiplier == "auto"
            else multiplier * base_learning_rate(request.model, str(config["method"]))
        )
    if request.seed is not None:
        config["seed"] = request.seed
    if request.integrations:
        raise OpenAIError(
            400,
            "integrations (Weights & Biases) are not available here: the job's page has its "
            "chart, and GET /api/v1/jobs/{id}/metrics its numbers",
            param="integrations",
            code="unsupported_integration",
        )
    shown = {
        "type": "supervised",
        "supervised": {"hyperparameters": hyper.model_dump()},
    }
    return config, shown, notes


def open_alternatives(count: int = 6) -> list[str]:
    """Small-to-mid open models of the catalog, smallest first."""
    names_by_size = sorted(CATALOG.items(), key=lambda item: item[1].params)
    return [name for name, _ in names_by_size[:count]]


def create_job(
    session: Session, *, settings: Settings, user: User, request: JobRequest
) -> tuple[Job, OpenAIJob]:
    """Validate the request, make the dataset version from its files and queue the job
    (committed by the caller, then offered)."""
    config, shown, notes = training_config(request)
    if request.suffix is not None and not SUFFIX.match(request.suffix):
        raise OpenAIError(
            400,
            "suffix: up to 64 letters, digits, '.', '_' or '-' (it becomes part of the model name)",
            param="suffix",
            code="invalid_suffix",
        )
    metadata = request.metadata or {}
    project = (
        files.project_named(session, user, metadata["project"], param="metadata.project")
        if metadata.get("project")
        else files.default_project(session, user)
    )
    training = files.get_file(session, user, request.training_file, param="training_file")
    if training.kind != "chat":
        raise OpenAIError(
            400,
            f"{request.training_file} holds preference pairs, which only a DPO job uses; "
            "tunelab has no DPO yet: send a chat file (messages) for a supervised job",
            param="training_file",
            code="invalid_training_file",
        )
    extras: dict[str, OpenAIFile] = {}
    for role, value in (("validation", request.validation_file), ("test", request.test_file)):
        if value:
            extras[role] = files.get_file(session, user, value, param=f"{role}_file")
            if extras[role].kind != "chat":
                raise OpenAIError(
                    400,
                    f"{value} holds preference pairs; the {role} file must hold chat records",
                    param=f"{role}_file",
                    code=f"invalid_{role}_file",
                )
    for sent in (training, *extras.values()):
        notes.extend(FEATURE_NOTES[f] for f in sent.features if f in FEATURE_NOTES)
    notes = list(dict.fromkeys(notes))
    try:
        version = _dataset_version(session, settings, user, project, training, extras)
        job = jobs_service.create_job(
            session,
            settings=settings,
            data=JobCreate(
                project_id=project.id,
                dataset_id=version.dataset_id,
                dataset_version=version.number,
                config=config,
                evaluate=True,
            ),
            user=user,
        )
    except TunelabError as exc:
        error = from_tunelab(exc)
        field = next((e.field for e in exc.errors if e.field), None)
        if isinstance(exc, InvalidDataset):
            error.param = "training_file"  # its records, as the data step found them
        elif field is not None and field.startswith("config."):
            error.param = PARAM_OF_FIELD.get(field, field.replace("config.", "tunelab_config.", 1))
        raise error from None
    owner = names.owner_name(user.email)
    row = OpenAIJob(
        job_id=job.id,
        created_at=utcnow(),
        model=request.model,
        suffix=request.suffix,
        fine_tuned_model=names.fine_tuned_model(
            base=request.model, owner=owner, suffix=request.suffix, job=job.id
        ),
        owner=owner,
        training_file_id=training.id,
        validation_file_id=extras["validation"].id if "validation" in extras else None,
        test_file_id=extras["test"].id if "test" in extras else None,
        method=shown,
        request_metadata=request.metadata,
        notes=notes,
    )
    session.add(row)
    multiplier = shown["supervised"]["hyperparameters"]["learning_rate_multiplier"]
    # A message id and its values, so the job page says it in its reader's language.
    message, params = job_events.MADE_THROUGH_OPENAI, {"id": names.job_id(job.id)}
    if multiplier != "auto" and isinstance(config.get("learning_rate"), float):
        message = job_events.MADE_THROUGH_OPENAI_WITH_RATE
        params |= {"multiplier": multiplier, "rate": f"{config['learning_rate']:.3g}"}
    jobs_service.add_event(
        session,
        job_id=job.id,
        message=message,
        params=params,
        data={"openai": {"notes": notes}} if notes else None,
    )
    session.flush()
    return job, row


def _dataset_version(
    session: Session,
    settings: Settings,
    user: User,
    project: Project,
    training: OpenAIFile,
    extras: dict[str, OpenAIFile],
) -> DatasetVersion:
    """The files as a dataset version of ``project``: every training record trains (OpenAI
    holds none out); a validation file is the validation split, a test file the test split."""
    upload = session.get(DatasetUpload, training.upload_id) if training.upload_id else None
    if (
        upload is not None
        and upload.project_id == project.id
        and not extras
        and upload.status == UploadStatus.imported.value
        and upload.version_id is not None
    ):
        # The same file trained alone in this project already: the same version again.
        version = session.get(DatasetVersion, upload.version_id)
        dataset = session.get(Dataset, version.dataset_id) if version else None
        if (
            version is not None
            and dataset is not None
            and dataset.project_id == project.id
            and (version.split or {}).get("method") != "files"
        ):
            return version
    if upload is None or upload.project_id != project.id or upload.status != "staged":
        upload = files.stage_records(
            session, settings=settings, user=user, file=training, project_id=project.id
        )
        session.flush()
    companions = {
        role: files.stage_records(
            session, settings=settings, user=user, file=row, project_id=project.id
        )
        for role, row in extras.items()
    }
    session.flush()
    _, version = imports.import_upload(
        session,
        settings=settings,
        upload=upload,
        options=ImportRequest(
            name=training.filename,
            format="chat",
            split=SplitOptions(validation=0, test=0),
            validation_upload_id=companions["validation"].id
            if "validation" in companions
            else None,
            test_upload_id=companions["test"].id if "test" in companions else None,
        ),
        user=user,
    )
    if upload.id != training.upload_id and training.upload_id is None:
        training.upload_id = upload.id
    return version


# --- Reading -------------------------------------------------------------------------------


def get_job(session: Session, user: User, value: str) -> tuple[Job, OpenAIJob]:
    job_id = names.parse(value, names.JOB, what="fine-tuning job", param="fine_tuning_job_id")
    row = session.get(OpenAIJob, job_id)
    job = session.get(Job, job_id)
    if row is None or job is None:
        raise OpenAIError(404, f"No such fine-tuning job: {value!r}", code="not_found")
    try:
        access.job_for(session, user, job_id)
    except TunelabError:
        raise OpenAIError(404, f"No such fine-tuning job: {value!r}", code="not_found") from None
    return job, row


def list_jobs(
    session: Session, user: User, *, after: str | None, limit: int, metadata: dict[str, str]
) -> tuple[list[tuple[Job, OpenAIJob]], bool]:
    conditions: list[Any] = [Job.project_id.in_(access.visible_projects(user))]
    if after:
        cursor, _ = get_job(session, user, after)
        conditions.append(
            or_(
                Job.created_at < cursor.created_at,
                and_(Job.created_at == cursor.created_at, Job.id < cursor.id),
            )
        )
    rows = session.execute(
        select(Job, OpenAIJob)
        .join(OpenAIJob, OpenAIJob.job_id == Job.id)
        .where(*conditions)
        .order_by(Job.created_at.desc(), Job.id.desc())
    )
    found: list[tuple[Job, OpenAIJob]] = []
    for job, row in rows:
        given = row.request_metadata or {}
        if all(given.get(k) == v for k, v in metadata.items()):
            found.append((job, row))
            if len(found) > limit:
                break
    return found[:limit], len(found) > limit


def status_of(job: Job, row: OpenAIJob) -> str:
    if row.paused_at is not None and job.status == JobStatus.cancelled:
        return "paused"
    return str(job.status)


def job_object(session: Session, job: Job, row: OpenAIJob) -> dict[str, Any]:
    status = status_of(job, row)
    succeeded = job.status == JobStatus.succeeded
    hyper = dict(row.method.get("supervised", {}).get("hyperparameters", {}))
    chosen = _chosen(session, job)
    config = job.config
    for name, field in (("n_epochs", "epochs"), ("batch_size", "batch_size")):
        value = chosen.get(field, config.get(field))
        if value not in (None, "auto"):
            hyper[name] = int(value) if float(value).is_integer() else value
    rate = chosen.get("learning_rate", config.get("learning_rate"))
    if isinstance(rate, int | float):
        base = base_learning_rate(str(config["base_model"]), str(config.get("method")))
        hyper["learning_rate_multiplier"] = round(rate / base, 6)
    estimated = None
    if job.status == JobStatus.running and job.current_step:
        eta = session.scalar(
            select(MetricPoint.value).where(
                MetricPoint.job_id == job.id,
                MetricPoint.step == job.current_step,
                MetricPoint.name == "eta_seconds",
            )
        )
        if eta is not None:
            estimated = files.unix(utcnow() + timedelta(seconds=eta))
    return {
        "id": names.job_id(job.id),
        "object": "fine_tuning.job",
        "created_at": files.unix(job.created_at),
        "finished_at": files.unix(job.finished_at)
        if job.finished_at and JobStatus(job.status).finished
        else None,
        "model": row.model,
        "fine_tuned_model": row.fine_tuned_model if succeeded else None,
        "organization_id": f"org-{row.owner}",
        "status": status,
        "training_file": names.file_id(row.training_file_id) if row.training_file_id else None,
        "validation_file": names.file_id(row.validation_file_id)
        if row.validation_file_id
        else None,
        "result_files": [names.results_file_id(job.id)] if succeeded else [],
        "trained_tokens": int(job.result.get("tokens") or 0) if succeeded else None,
        "estimated_finish": estimated,
        "error": {"code": "training_failed", "message": job.error or "failed", "param": None}
        if job.status == JobStatus.failed
        else None,
        "hyperparameters": hyper,
        "method": {**row.method, "supervised": {"hyperparameters": hyper}},
        "seed": int(config.get("seed", 42)),
        "suffix": row.suffix,
        "user_provided_suffix": row.suffix,
        "metadata": row.request_metadata,
        "integrations": [],
        # tunelab's own addition: where the job lives, and what it trains differently.
        "tunelab": {
            "job_id": str(job.id),
            "project_id": str(job.project_id),
            "url": f"/jobs/{job.id}",
            "notes": row.notes,
            "test_file": names.file_id(row.test_file_id) if row.test_file_id else None,
        },
    }


def _chosen(session: Session, job: Job) -> dict[str, Any]:
    """What the engine chose for the fields left at auto (its "Chosen automatically" event)."""
    for data in session.scalars(
        select(JobEvent.data).where(JobEvent.job_id == job.id).order_by(JobEvent.id.desc())
    ):
        if isinstance(data, dict) and isinstance(data.get("auto"), dict):
            return dict(data["auto"])
    return {}


def events(
    session: Session, job: Job, *, after: str | None, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """The job's events and a ``metrics`` event per trained step ("Step 3/30: training
    loss=…"), newest first, as OpenAI lists them; ``after`` is the last event id seen."""
    timeline = [
        (event.created_at, 1, event.id, _event_object(event))
        for event in session.scalars(select(JobEvent).where(JobEvent.job_id == job.id))
    ]
    losses: dict[int, dict[str, Any]] = {}
    for point in session.scalars(
        select(MetricPoint).where(
            MetricPoint.job_id == job.id, MetricPoint.name.in_(("loss", "val_loss"))
        )
    ):
        step = losses.setdefault(point.step, {"at": point.created_at})
        step[point.name] = point.value
        step["at"] = max(step["at"], point.created_at)
    timeline += [
        (values["at"], 0, step, _step_event(job, step, values))
        for step, values in losses.items()
        if "loss" in values
    ]
    timeline.sort(key=lambda item: item[:3], reverse=True)
    ordered = [item[3] for item in timeline]
    if after:
        ids = [item["id"] for item in ordered]
        if after not in ids:
            raise OpenAIError(400, f"after: no such event {after!r}", param="after")
        ordered = ordered[ids.index(after) + 1 :]
    return ordered[:limit], len(ordered) > limit


def _event_object(event: JobEvent) -> dict[str, Any]:
    return {
        "id": f"{names.EVENT}{event.id}",
        "object": "fine_tuning.job.event",
        "created_at": files.unix(event.created_at),
        "level": {"warning": "warn"}.get(event.level, event.level),
        "message": event.message,
        "data": event.data or {},
        "type": "message",
    }


def _step_event(job: Job, step: int, values: dict[str, Any]) -> dict[str, Any]:
    total = job.total_steps or step
    message = f"Step {step}/{total}: training loss={values['loss']:.4f}"
    data: dict[str, Any] = {"step": step, "total_steps": total, "train_loss": values["loss"]}
    if "val_loss" in values:
        message += f", validation loss={values['val_loss']:.4f}"
        data["valid_loss"] = values["val_loss"]
    return {
        "id": f"{names.EVENT}step-{step}",
        "object": "fine_tuning.job.event",
        "created_at": files.unix(values["at"]),
        "level": "info",
        "message": message,
        "data": data,
        "type": "metrics",
    }


def checkpoints(
    session: Session, settings: Settings, job: Job, row: OpenAIJob, *, after: str | None, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """The job's saved checkpoints, newest first, each with its step's losses."""
    found = []
    for folder in reversed(list_checkpoints(settings, job.id)):
        step = int(folder.name.removeprefix("checkpoint-"))
        found.append((step, folder))
    if after:
        steps = [s for s, _ in found]
        try:
            step_after = int(after.rsplit("-", 1)[1])
        except (IndexError, ValueError):
            raise OpenAIError(400, f"after: no such checkpoint {after!r}", param="after") from None
        found = [(s, f) for s, f in found if s < step_after] if step_after in steps else found
    points = {
        (p.step, p.name): p.value
        for p in session.scalars(
            select(MetricPoint).where(
                MetricPoint.job_id == job.id,
                MetricPoint.step.in_([s for s, _ in found]),
                MetricPoint.name.in_(("loss", "val_loss")),
            )
        )
    }
    data = []
    for step, folder in found[:limit]:
        data.append(
            {
                "id": names.checkpoint_id(job.id, step),
                "object": "fine_tuning.job.checkpoint",
                "created_at": int(folder.stat().st_mtime),
                "fine_tuned_model_checkpoint": names.checkpoint_model(row.fine_tuned_model, step),
                "fine_tuning_job_id": names.job_id(job.id),
                "step_number": step,
                "metrics": {
                    "step": step,
                    "train_loss": points.get((step, "loss")),
                    "valid_loss": points.get((step, "val_loss")),
                    "train_mean_token_accuracy": None,
                    "valid_mean_token_accuracy": None,
                    "full_valid_loss": None,
                    "full_valid_mean_token_accuracy": None,
                },
            }
        )
    return data, len(found) > limit


RESULT_COLUMNS = ("step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy")


def results_csv(session: Session, job: Job) -> bytes:
    """OpenAI's results file: one row a step. tunelab measures no token accuracy: those cells
    are empty; valid_loss is filled at the steps the validation split was evaluated."""
    by_step: dict[int, dict[str, float]] = {}
    for point in jobs_service.list_metrics(session, job_id=job.id):
        if point.name in ("loss", "val_loss"):
            by_step.setdefault(point.step, {})[point.name] = point.value
    out = io.StringIO()
    writer = safe_writer(out)
    writer.writerow(RESULT_COLUMNS)
    for step in sorted(by_step):
        values = by_step[step]
        writer.writerow([step, _cell(values.get("loss")), "", _cell(values.get("val_loss")), ""])
    return out.getvalue().encode("utf-8")


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def results_job(session: Session, user: User, value: str) -> Job:
    job_id = names.parse(value, names.RESULTS, what="file")
    if session.get(OpenAIJob, job_id) is None:
        raise OpenAIError(404, f"No such file: {value!r}", code="not_found")
    try:
        return access.job_for(session, user, job_id)
    except TunelabError:
        raise OpenAIError(404, f"No such file: {value!r}", code="not_found") from None


# --- Cancel, pause, resume -----------------------------------------------------------------


def cancel(session: Session, job: Job, row: OpenAIJob) -> None:
    if row.paused_at is not None and job.status == JobStatus.cancelled:
        row.paused_at = None  # a paused job cancelled stays cancelled: no resume
        jobs_service.add_event(session, job_id=job.id, message="Cancelled while paused")
        session.flush()
        return
    try:
        jobs_service.cancel_job(session, job_id=job.id)
    except TunelabError as exc:
        raise from_tunelab(exc) from None
    row.paused_at = None
    session.flush()


def pause(session: Session, job: Job, row: OpenAIJob) -> None:
    """Stop the job, keeping its checkpoints; ``resume`` queues it again from the newest."""
    if row.paused_at is not None:
        return
    done = leases.cancel(session, leases.JOB, job.id)
    if done is None:
        session.refresh(job)
        raise OpenAIError(
            409, f"the job has already {job.status} and cannot be paused", code="conflict"
        )
    row.paused_at = utcnow()
    jobs_service.add_event(
        session,
        job_id=job.id,
        message="Paused through the API"
        + ("" if done == "cancelled" else ": it stops at its next step")
        + "; resume queues it again from its newest checkpoint",
    )
    session.flush()
    session.refresh(job)


def resume(session: Session, settings: Settings, job: Job, row: OpenAIJob) -> None:
    if row.paused_at is None:
        raise OpenAIError(409, f"the job is {job.status}, not paused", code="conflict")
    if job.status != JobStatus.cancelled:
        raise OpenAIError(
            409,
            "the job is still stopping at its next step; resume it once its status is paused",
            code="conflict",
        )
    now = utcnow()
    queued = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status == JobStatus.cancelled)
        .values(
            status=JobStatus.queued,
            worker=None,
            heartbeat_at=None,
            cancel_requested_at=None,
            finished_at=None,
            error=None,
            queued_at=now,
            offered_at=None,
        )
    )
    if not queued.rowcount:  # type: ignore[attr-defined]
        raise OpenAIError(409, "the job changed meanwhile; read it again", code="conflict")
    row.paused_at = None
    saved = list_checkpoints(settings, job.id)
    where = f"from {saved[-1].name}" if saved else "from the start (no checkpoint was saved)"
    jobs_service.add_event(
        session, job_id=job.id, message=f"Resumed through the API: queued again, {where}"
    )
    session.flush()
    session.refresh(job)
