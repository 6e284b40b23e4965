"""Reading evaluations back: lists, the API view with its verdict, and a project's report."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session, object_session

from app.core.config import get_settings
from app.models import EvalStatus, Evaluation, Project, User
from app.schemas.evaluation import EvaluationRead
from app.services import access, workers
from worker.spec.criteria import summary as verdict_summary
from worker.spec.criteria import verdict as criteria_verdict


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
    if evaluation.status == EvalStatus.queued and session is not None:
        read.waiting_reason = workers.waiting_reason(
            session, settings=get_settings(), queue=evaluation.queue, kind="evaluation"
        )
    return read


def _human_results(session: Session, evaluation: Evaluation) -> dict[str, Any] | None:
    """What people said of this evaluation's models: its newest review campaign with ratings
    (a closed one first) gives the win rate and mean rating human criteria are judged on."""
    # Reviews build on evaluations (reviews.campaigns imports this package), so they are
    # loaded when first needed rather than whenever evaluations are.
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
