"""The goal a project states, and the lists every page and route starts from."""

from __future__ import annotations

import uuid
from pathlib import Path

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app.core.errors import Conflict, FieldError, InvalidInput, NotFound
from app.models import EvalSample, Evaluation, Job, JobStatus, Project, User
from app.schemas.project import ProjectCreate
from app.services import access
from app.services.accounts import audit
from worker.spec.criteria import check_criteria


def create_project(session: Session, *, data: ProjectCreate, creator: User) -> Project:
    """Create a project from a validated goal; its creator becomes its first member."""
    check_success_criteria(data.success_criteria)
    project = Project(**data.model_dump(), created_by_id=creator.id)
    session.add(project)
    session.flush()
    access.add_member(session, project=project, user=creator, actor=creator)
    return project


def check_success_criteria(criteria: list[str]) -> None:
    """Refuse criteria the evaluation could never check, naming each one and why."""
    problems = check_criteria(criteria)
    if problems:
        raise InvalidInput(
            f"success criterion {problems[0][0] + 1}: {problems[0][1]}",
            errors=[FieldError(field=f"success_criteria.{i}", message=m) for i, m in problems],
        )


def get_project(session: Session, *, project_id: uuid.UUID) -> Project:
    """Return the project or raise NotFound."""
    project = session.get(Project, project_id)
    if project is None:
        raise NotFound("project not found")
    return project


def list_projects(
    session: Session, *, user: User, limit: int, offset: int
) -> tuple[list[Project], int]:
    """The projects ``user`` may see, newest first, with the total count."""
    where = Project.id.in_(access.visible_projects(user))
    total = session.scalar(select(func.count()).select_from(Project).where(where)) or 0
    rows = session.scalars(
        select(Project)
        .where(where)
        .order_by(Project.created_at.desc(), Project.id)
        .limit(limit)
        .offset(offset)
    ).all()
    return list(rows), total


def delete_project(session: Session, *, project: Project, actor: User, ip: str = "") -> list[str]:
    """Delete a project and its rows; refuses while one of its jobs is active.

    Returns the artifact folders (relative to the data folder) for the caller to remove once
    the deletion is committed. Dataset files are content-addressed and may be shared with other
    projects, so they stay.
    """
    active = session.scalar(
        select(func.count())
        .select_from(Job)
        .where(
            Job.project_id == project.id,
            Job.status.in_([JobStatus.validating_files, JobStatus.queued, JobStatus.running]),
        )
    )
    if active:
        raise Conflict("the project has jobs that are still queued or running: cancel them first")
    folders = [
        str(Path("artifacts") / str(job_id))
        for job_id in session.scalars(select(Job.id).where(Job.project_id == project.id))
    ]
    # Evaluations and jobs reference dataset versions without cascading, so they go first.
    evaluations = select(Evaluation.id).where(Evaluation.project_id == project.id)
    session.execute(delete(EvalSample).where(EvalSample.evaluation_id.in_(evaluations)))
    session.execute(delete(Evaluation).where(Evaluation.project_id == project.id))
    session.execute(delete(Job).where(Job.project_id == project.id))
    session.delete(project)
    audit.record(
        session,
        action="project.deleted",
        actor=actor,
        target=f"project {project.id}",
        ip=ip,
        details={"name": project.name},
    )
    session.flush()
    return folders
