"""Evaluations: which models answer which held-out prompts, and their results.

An evaluation row holds the lease of ``app.services.leases`` like every queued work. Its
samples are written in the same transaction that marks it succeeded, so a reader sees either
no samples or all of them.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session, object_session

from app.core.config import Settings
from app.core.db import utcnow
from app.core.errors import Conflict, FieldError, InvalidInput, NotFound
from app.models import (
    DatasetVersion,
    EvalSample,
    EvalStatus,
    Evaluation,
    Job,
    JobStatus,
    ModelPermission,
    Project,
    User,
)
from app.schemas.evaluation import CandidateIn, EvaluationCreate, EvaluationRead
from app.services import access, leases, queue
from app.services import datasets as datasets_service
from app.services.jobs import checkpoints_dir
from app.services.jobs.base_models import check_base_model
from worker.spec.catalog import catalog_entry
from worker.spec.criteria import summary as verdict_summary
from worker.spec.criteria import verdict as criteria_verdict
from worker.spec.methods import METHODS

BASELINE_KEY = "baseline"
CHECKPOINT_NAME = re.compile(r"^checkpoint-\d+$")
# The metric that orders samples ("fine-tuned worse than baseline" first) unless a success
# criterion names another.
DEFAULT_PRIMARY = "rougeL"
KNOWN_METRICS = ("bleu", "rouge1", "rouge2", "rougeL", "exact_match", "token_f1", "perplexity")
SHOW = ("all", "worse", "better", "same")


# --- Creating ---------------------------------------------------------------------------------


def create_evaluation(
    session: Session, *, settings: Settings, data: EvaluationCreate, user: User
) -> Evaluation:
    """Validate the models and the test data, and leave the evaluation queued (not sent)."""
    project = access.project_for(session, user, data.project_id)
    job = _finished_job(session, project, data.job_id, field="job_id") if data.job_id else None
    if job is None and not data.models:
        raise InvalidInput(
            "name a finished job (job_id) or at least one model (models) to evaluate",
            errors=[FieldError(field="models", message="give job_id or at least one model")],
        )
    candidates: list[dict[str, Any]] = []
    subject_base = job.config["base_model"] if job is not None else None
    if data.baseline and (subject_base or _first_base_model(session, project, data.models)):
        base_model = subject_base or _first_base_model(session, project, data.models)
        assert base_model is not None
        candidates.append(
            _base_candidate(
                session,
                project,
                key=BASELINE_KEY,
                base_model=base_model,
                k_shot=data.baseline_k_shot,
            )
        )
    if job is not None:
        candidates.append(_job_candidate(session, job))
    for index, model in enumerate(data.models):
        candidates.append(_candidate(session, settings, project, model, index, candidates))
    keys = [c["key"] for c in candidates]
    if len(set(keys)) != len(keys):
        raise InvalidInput(
            "the same model is listed twice",
            errors=[FieldError(field="models", message="each model may be evaluated once")],
        )
    if len(candidates) > 8:
        raise InvalidInput(
            "at most 8 models per evaluation",
            errors=[FieldError(field="models", message="at most 8 models per evaluation")],
        )
    version = _test_version(session, user, project, data, job)
    # After the test data is known, so a request missing both is told about the data first.
    for index, model in enumerate(data.models):
        if model.kind == "base" and model.base_model:
            check_base_model(
                model.base_model, field=f"models.{index}.base_model", settings=settings
            )
    counts = _split_sizes(version)
    available = counts.get(data.split, 0) if data.split != "all" else sum(counts.values())
    if available == 0:
        message = (
            f"the {data.split} split of dataset version {version.number} is empty; choose "
            "another split, or upload a test file as its own dataset and use split=all"
        )
        raise InvalidInput.on("split", message, detail=message)
    # Without a job's base model to prompt, the first prompted base model listed is the
    # baseline the others are compared with.
    first = candidates[0]
    baseline = first["key"] if data.baseline and first["kind"] == "base" else None

    evaluation = Evaluation(
        project_id=project.id,
        dataset_version_id=version.id,
        split=data.split,
        job_id=job.id if job is not None else _only_job(candidates),
        candidates=candidates,
        settings={
            "decoding": data.decoding.model_dump(mode="json"),
            "max_samples": data.max_samples,
            "examples": min(available, data.max_samples or available),
            "baseline": baseline,
            "primary_metric": primary_metric(project.success_criteria),
        },
        status=EvalStatus.queued,
        queue=job.queue if job is not None else settings.default_queue,
        queued_at=utcnow(),
        progress={},
        results={},
        created_by_id=user.id,
    )
    session.add(evaluation)
    session.flush()
    return evaluation


def evaluation_after_job(session: Session, *, settings: Settings, job: Job) -> Evaluation | None:
    """The evaluation a succeeded job queues for itself, if its data has a test split."""
    version = session.get(DatasetVersion, job.dataset_version_id)
    if version is None or not job.evaluate_after or _split_sizes(version).get("test", 0) == 0:
        return None
    creator = session.get(User, job.created_by_id) if job.created_by_id else None
    project = session.get(Project, job.project_id)
    if project is None:
        return None
    candidates = [
        _base_candidate(
            session, project, key=BASELINE_KEY, base_model=job.config["base_model"], k_shot=0
        ),
        _job_candidate(session, job),
    ]
    test_size = _split_sizes(version)["test"]
    cap = settings.auto_eval_max_samples
    evaluation = Evaluation(
        project_id=job.project_id,
        dataset_version_id=version.id,
        split="test",
        job_id=job.id,
        candidates=candidates,
        settings={
            "decoding": {"max_new_tokens": None, "temperature": 0.0, "seed": 0},
            "max_samples": cap,
            "examples": min(test_size, cap),
            "baseline": BASELINE_KEY,
            "primary_metric": primary_metric(project.success_criteria),
            "automatic": True,
        },
        status=EvalStatus.queued,
        queue=job.queue,
        queued_at=utcnow(),
        progress={},
        results={},
        created_by_id=creator.id if creator else None,
    )
    session.add(evaluation)
    session.flush()
    return evaluation


def primary_metric(criteria: Sequence[str]) -> str:
    """The first metric a success criterion names, else ROUGE-L."""
    from worker.spec.criteria import CriterionError, parse_criterion

    for text in criteria:
        try:
            criterion = parse_criterion(text)
        except CriterionError:
            continue
        if criterion.metric:
            return criterion.metric
    return DEFAULT_PRIMARY


def _finished_job(session: Session, project: Project, job_id: uuid.UUID, *, field: str) -> Job:
    job = session.get(Job, job_id)
    if job is None or job.project_id != project.id:
        raise NotFound("job not found in this project")
    if job.status != JobStatus.succeeded:
        message = f"job {str(job.id)[:8]} has {job.status}; only a succeeded job has a model"
        raise InvalidInput.on(field, message, detail=message)
    return job


def _test_version(
    session: Session, user: User, project: Project, data: EvaluationCreate, job: Job | None
) -> DatasetVersion:
    if data.dataset_id is not None:
        dataset = access.dataset_for(session, user, data.dataset_id)
        if dataset.project_id != project.id:
            raise NotFound("dataset not found in this project")
        return datasets_service.version_of(dataset, data.dataset_version)
    source = job
    if source is None:
        job_ids = [m.job_id for m in data.models if m.job_id is not None]
        source = session.get(Job, job_ids[0]) if job_ids else None
    if source is None or source.project_id != project.id:
        message = "say which data to evaluate on: dataset_id (and dataset_version)"
        raise InvalidInput.on("dataset_id", message, detail=message)
    version = session.get(DatasetVersion, source.dataset_version_id)
    if version is None:
        raise NotFound("the job's dataset version no longer exists")
    return version


def _split_sizes(version: DatasetVersion) -> dict[str, int]:
    return datasets_service.split_counts(version)


def _first_base_model(
    session: Session, project: Project, models: Sequence[CandidateIn]
) -> str | None:
    for model in models:
        if model.job_id is not None:
            job = session.get(Job, model.job_id)
            if job is not None and job.project_id == project.id:
                return str(job.config["base_model"])
    return None


def _only_job(candidates: list[dict[str, Any]]) -> uuid.UUID | None:
    jobs = {c["job_id"] for c in candidates if c.get("job_id")}
    return uuid.UUID(jobs.pop()) if len(jobs) == 1 else None


def _permissions(session: Session, base_model: str) -> dict[str, bool]:
    permission = session.scalar(select(ModelPermission).where(ModelPermission.model == base_model))
    return {
        "trust_remote_code": bool(permission and permission.trust_remote_code),
        "allow_pickle_weights": bool(permission and permission.allow_pickle_weights),
    }


def _base_candidate(
    session: Session,
    project: Project,
    *,
    key: str,
    base_model: str,
    k_shot: int,
    system_prompt: str | None = None,
    label: str | None = None,
) -> dict[str, Any]:
    shots = f", {k_shot}-shot" if k_shot else ", zero-shot"
    prompt = project.system_prompt if system_prompt is None else system_prompt
    return {
        "key": key,
        "label": label or f"Base model + prompt ({_model_title(base_model)}{shots})",
        "kind": "base",
        "base_model": base_model,
        "job_id": None,
        "checkpoint": None,
        "method": None,
        "k_shot": k_shot,
        "system_prompt": prompt,
        **_permissions(session, base_model),
    }


def _job_candidate(
    session: Session, job: Job, *, label: str | None = None, k_shot: int = 0
) -> dict[str, Any]:
    method = str(job.config.get("method", "lora"))
    return {
        "key": f"job-{str(job.id)[:8]}",
        "label": label or f"Fine-tuned ({method_title(method)}, job {str(job.id)[:8]})",
        "kind": "job",
        "base_model": job.config["base_model"],
        "job_id": str(job.id),
        "checkpoint": None,
        "method": method,
        "k_shot": k_shot,
        "system_prompt": job.config.get("system_prompt"),
        **_permissions(session, str(job.config["base_model"])),
    }


def _candidate(
    session: Session,
    settings: Settings,
    project: Project,
    model: CandidateIn,
    index: int,
    earlier: list[dict[str, Any]],
) -> dict[str, Any]:
    field = f"models.{index}"
    if model.kind == "base":
        if not model.base_model:
            raise InvalidInput(
                f"{field}.base_model: name the base model",
                errors=[FieldError(field=f"{field}.base_model", message="name the base model")],
            )
        return _base_candidate(
            session,
            project,
            key=f"base-{index + 1}",
            base_model=model.base_model,
            k_shot=model.k_shot,
            system_prompt=model.system_prompt,
            label=model.label,
        )
    if model.job_id is None:
        raise InvalidInput(
            f"{field}.job_id: name the job",
            errors=[FieldError(field=f"{field}.job_id", message=f"a {model.kind} needs job_id")],
        )
    job = session.get(Job, model.job_id)
    if job is None or job.project_id != project.id:
        raise NotFound("job not found in this project")
    if model.kind == "job":
        job = _finished_job(session, project, model.job_id, field=f"{field}.job_id")
        candidate = _job_candidate(session, job, label=model.label, k_shot=model.k_shot)
        if model.system_prompt is not None:
            candidate["system_prompt"] = model.system_prompt
        return candidate
    name = model.checkpoint or ""
    folder = checkpoint_folder(settings, job.id, name)
    if not CHECKPOINT_NAME.match(name) or not folder.is_dir():
        have = ", ".join(p.name for p in list_checkpoints(settings, job.id)) or "none"
        message = f"job {str(job.id)[:8]} has no checkpoint {name!r} (it has: {have})"
        raise InvalidInput.on(f"{field}.checkpoint", message, detail=message)
    step = name.removeprefix("checkpoint-")
    return {
        "key": f"ckpt-{str(job.id)[:8]}-{step}",
        "label": model.label or f"Checkpoint {step} of job {str(job.id)[:8]}",
        "kind": "checkpoint",
        "base_model": job.config["base_model"],
        "job_id": str(job.id),
        "checkpoint": name,
        "method": job.config.get("method"),
        "k_shot": model.k_shot,
        "system_prompt": (
            model.system_prompt
            if model.system_prompt is not None
            else job.config.get("system_prompt")
        ),
        **_permissions(session, str(job.config["base_model"])),
    }


def checkpoint_folder(settings: Settings, job_id: uuid.UUID, name: str) -> Path:
    return checkpoints_dir(settings, job_id) / name


def list_checkpoints(settings: Settings, job_id: uuid.UUID) -> list[Path]:
    """A job's finished checkpoints, oldest first (staging folders start with a dot)."""
    folder = checkpoints_dir(settings, job_id)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and CHECKPOINT_NAME.match(p.name)]
    return sorted(found, key=lambda p: int(p.name.removeprefix("checkpoint-")))


def _model_title(name: str) -> str:
    entry = catalog_entry(name)
    return entry.title if entry is not None else Path(name).name or name


def method_title(method: str) -> str:
    info = METHODS.get(method)
    return info.title if info is not None else method


# --- Reading ------------------------------------------------------------------------------------


def list_evaluations(
    session: Session,
    *,
    user: User,
    limit: int,
    offset: int,
    project_id: uuid.UUID | None = None,
    job_id: uuid.UUID | None = None,
    status: str | None = None,
) -> tuple[list[Evaluation], int]:
    """The evaluations ``user`` may see, newest first."""
    conditions: list[ColumnElement[bool]] = [
        Evaluation.project_id.in_(access.visible_projects(user))
    ]
    if project_id is not None:
        conditions.append(Evaluation.project_id == project_id)
    if job_id is not None:
        conditions.append(Evaluation.job_id == job_id)
    if status is not None:
        conditions.append(Evaluation.status == status)
    total = session.scalar(select(func.count()).select_from(Evaluation).where(*conditions)) or 0
    rows = session.scalars(
        select(Evaluation)
        .where(*conditions)
        .order_by(Evaluation.created_at.desc(), Evaluation.id)
        .limit(limit)
        .offset(offset)
    ).all()
    return list(rows), total


def evaluation_read(evaluation: Evaluation, project: Project) -> EvaluationRead:
    """The API view of an evaluation, with the verdict on the project's current criteria."""
    read = EvaluationRead.model_validate(evaluation)
    results = evaluation.results if evaluation.status == EvalStatus.succeeded else None
    session = object_session(evaluation)
    if results and session is not None:
        human = _human_results(session, evaluation)
        if human is not None:
            results = {**results, "human": human}
            read.results = results
    read.verdict = criteria_verdict(list(project.success_criteria), results or None)
    read.verdict_summary = verdict_summary(read.verdict)
    return read


def _human_results(session: Session, evaluation: Evaluation) -> dict[str, Any] | None:
    """What people said of this evaluation's models: its newest review campaign with ratings
    (a closed one first) gives the win rate and mean rating human criteria are judged on."""
    from app.models import CampaignStatus, Rating, ReviewCampaign
    from app.services.reviews.results import human_summary

    campaigns = session.scalars(
        select(ReviewCampaign)
        .where(
            ReviewCampaign.evaluation_id == evaluation.id,
            ReviewCampaign.status != CampaignStatus.draft,
            select(Rating.id).where(Rating.campaign_id == ReviewCampaign.id).exists(),
        )
        .order_by(ReviewCampaign.closed_at.is_(None), ReviewCampaign.created_at.desc())
        .limit(1)
    ).all()
    return human_summary(session, campaign=campaigns[0]) if campaigns else None


def list_samples(
    session: Session,
    *,
    evaluation: Evaluation,
    q: str | None = None,
    show: str = "all",
    order: str = "worst",
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[EvalSample], int]:
    """A page of samples: searched in prompt, reference and answers, filtered by how the
    subject did against the baseline, worst first by default."""
    conditions: list[ColumnElement[bool]] = [EvalSample.evaluation_id == evaluation.id]
    if q:
        pattern = "%" + _escape_like(q.strip().lower()) + "%"
        conditions.append(EvalSample.search_text.like(pattern, escape="\\"))
    if show == "worse":
        conditions.append(EvalSample.delta < 0)
    elif show == "better":
        conditions.append(EvalSample.delta > 0)
    elif show == "same":
        conditions.append(EvalSample.delta == 0)
    total = session.scalar(select(func.count()).select_from(EvalSample).where(*conditions)) or 0
    ordering = (
        [EvalSample.delta.is_(None), EvalSample.delta, EvalSample.position]
        if order == "worst"
        else [EvalSample.delta.is_(None), EvalSample.delta.desc(), EvalSample.position]
        if order == "best"
        else [EvalSample.position]
    )
    rows = session.scalars(
        select(EvalSample).where(*conditions).order_by(*ordering).limit(limit).offset(offset)
    ).all()
    return list(rows), total


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def all_samples(session: Session, *, evaluation_id: uuid.UUID) -> list[EvalSample]:
    return list(
        session.scalars(
            select(EvalSample)
            .where(EvalSample.evaluation_id == evaluation_id)
            .order_by(EvalSample.position)
        ).all()
    )


def project_report(session: Session, *, project: Project, history: int = 20) -> dict[str, Any]:
    """The newest succeeded evaluation with the verdict, and the project's recent ones."""
    recent = list(
        session.scalars(
            select(Evaluation)
            .where(Evaluation.project_id == project.id)
            .order_by(Evaluation.created_at.desc(), Evaluation.id)
            .limit(history)
        ).all()
    )
    latest = session.scalar(
        select(Evaluation)
        .where(Evaluation.project_id == project.id, Evaluation.status == EvalStatus.succeeded)
        .order_by(Evaluation.finished_at.desc(), Evaluation.id)
        .limit(1)
    )
    # Each read judges the verdict (and looks up human reviews): once per evaluation.
    reads = {e.id: evaluation_read(e, project) for e in recent}
    current = None
    if latest is not None:
        current = reads.get(latest.id) or evaluation_read(latest, project)
    verdict = current.verdict if current else criteria_verdict(list(project.success_criteria), None)
    return {
        "project_id": project.id,
        "success_criteria": list(project.success_criteria),
        "evaluation": current,
        "verdict": verdict,
        "verdict_summary": verdict_summary(verdict),
        "history": list(reads.values()),
    }


# --- The state machine ----------------------------------------------------------------------


def cancel_evaluation(session: Session, *, evaluation: Evaluation) -> Evaluation:
    """Cancel a queued evaluation at once, a running one at its worker's next batch."""
    if leases.cancel(session, leases.EVALUATION, evaluation.id) is None:
        session.refresh(evaluation)
        raise Conflict(f"the evaluation has already {evaluation.status}")
    session.flush()
    session.refresh(evaluation)
    return evaluation


def store_samples(
    session: Session, *, evaluation_id: uuid.UUID, samples: Sequence[dict[str, Any]]
) -> None:
    """An evaluation's answers, written in the transaction that marks it succeeded (so a
    reader sees none or all of them)."""
    # A re-queued attempt may follow one that died after writing: start clean.
    session.query(EvalSample).filter(EvalSample.evaluation_id == evaluation_id).delete()
    session.add_all(EvalSample(evaluation_id=evaluation_id, **row) for row in samples)
    session.flush()


def search_text(prompt: str, reference: str, outputs: dict[str, str]) -> str:
    return "\n".join([prompt, reference, *outputs.values()]).lower()


def offer(session: Session, *, evaluation: Evaluation) -> None:
    """Hand a committed, queued evaluation to the broker; should the broker be down, it
    waits and is sent as soon as the broker is back."""
    queue.offer(session, leases.EVALUATION, evaluation.id, evaluation.queue)
