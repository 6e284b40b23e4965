"""The goal a project states, and the lists every page and route starts from."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.errors import NotFound
from app.models import Project
from app.schemas.project import ProjectCreate


def create_project(session: Session, *, data: ProjectCreate) -> Project:
    """Create a project from a validated goal."""
    project = Project(**data.model_dump())
    session.add(project)
    session.flush()
    return project


def get_project(session: Session, *, project_id: uuid.UUID) -> Project:
    """Return the project or raise NotFound."""
    project = session.get(Project, project_id)
    if project is None:
        raise NotFound("project not found")
    return project


def list_projects(session: Session, *, limit: int, offset: int) -> tuple[list[Project], int]:
    """Newest first, with the total count."""
    total = session.scalar(select(func.count()).select_from(Project)) or 0
    rows = session.scalars(
        select(Project).order_by(Project.created_at.desc(), Project.id).limit(limit).offset(offset)
    ).all()
    return list(rows), total
