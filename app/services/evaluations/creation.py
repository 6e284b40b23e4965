"""Creating evaluations: checking the models and the test data, queueing and cancelling."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.db import utcnow
from app.core.errors import Conflict, FieldError, InvalidInput, NotFound
from app.models import DatasetVersion, EvalStatus, Evaluation, Job, Project, User
from app.schemas.evaluation import CandidateIn, EvaluationCreate
from app.services import access, leases, queue
from app.services import datasets as datasets_service
from app.services.evaluations.candidates import (
    BASELINE_KEY,
    base_candidate,
    candidate,
    finished_job,
    job_candidate,
)
from app.services.jobs.base_models import check_base_model
from worker.spec.criteria import CriterionError, parse_criterion

# The metric that orders samples ("fine-tuned worse than baseline" first) unless a success
# criterion names another.
DEFAULT_PRIMARY = "rougeL"
KNOWN_METRICS = ("bleu", "rouge1", "rouge2", "rougeL", "exact_match", "token_f1", "perplexity")


def create_evaluation(
    session: Session, *, settings: Settings, data: EvaluationCreate, user: User
) -> Evaluation:
    """Validate the models and the test data, and leave the evaluation queued (not sent)."""
    project = access.project_for(session, user, data.project_id)
    job = finished_job(session, project, data.job_id, field="job_id") if data.job_id else None
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
            base_candidate(
                session,
                project,
                key=BASELINE_KEY,
                base_model=base_model,
                k_shot=data.baseline_k_shot,
            )
        )
    if job is not None:
        candidates.append(job_candidate(session, job))
    for index, model in enumerate(data.models):
        candidates.append(candidate(session, settings, project, model, index, candidates))
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
        base_candidate(
            session, project, key=BASELINE_KEY, base_model=job.config["base_model"], k_shot=0
        ),
        job_candidate(session, job),
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
    for text in criteria:
        try:
            criterion = parse_criterion(text)
        except CriterionError:
            continue
        if criterion.metric:
            return criterion.metric
    return DEFAULT_PRIMARY


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


def cancel_evaluation(session: Session, *, evaluation: Evaluation) -> Evaluation:
    """Cancel a queued evaluation at once, a running one at its worker's next batch."""
    if leases.cancel(session, leases.EVALUATION, evaluation.id) is None:
        session.refresh(evaluation)
        raise Conflict(f"the evaluation has already {evaluation.status}")
    session.flush()
    session.refresh(evaluation)
    return evaluation


def offer(session: Session, *, evaluation: Evaluation) -> None:
    """Hand a committed, queued evaluation to the broker; should the broker be down, it
    waits and is sent as soon as the broker is back."""
    queue.offer(session, leases.EVALUATION, evaluation.id, evaluation.queue)
