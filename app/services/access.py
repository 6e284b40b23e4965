"""Who may see which project, and every object reached through one.

A user who may not see an object gets NotFound, exactly as for an id that does not exist, so
guessing ids reveals nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, false, select
from sqlalchemy.orm import Session

from app.core.errors import NotFound
from app.models import (
    Artifact,
    Dataset,
    DatasetUpload,
    Evaluation,
    Job,
    Project,
    ProjectMember,
    Role,
    User,
)
from app.services.accounts import audit


@dataclass(frozen=True)
class Viewer:
    """What pages show of the caller, copied when the request is authenticated: an error page
    rendered after the request's session is gone must not need the database."""

    id: uuid.UUID
    email: str
    role: str
    display_name: str
    locale: str | None = None  # the language the user chose; None: the browser's

    @classmethod
    def of(cls, user: User) -> Viewer:
        return cls(user.id, user.email, str(user.role), user.display_name or "", user.locale)


@dataclass
class Principal:
    """The caller of a request: a user, how they proved it, and what they may do."""

    user: User
    viewer: Viewer
    scopes: set[str]
    via: str  # "session" | "token"
    csrf_token: str | None = None
    ip: str = ""
    token_id: uuid.UUID | None = field(default=None)

    @property
    def is_admin(self) -> bool:
        return self.user.role == Role.admin

    @property
    def acts_as_admin(self) -> bool:
        """An admin whose credential carries the admin scope: may act on other users' things."""
        return self.is_admin and "admin" in self.scopes


def visible_projects(user: User) -> Select[Any]:
    """A subquery of the ids of the projects ``user`` may see."""
    if user.role == Role.admin:
        return select(Project.id)
    if user.role != Role.trainer:
        # Reviewers reach review work only, never a project's data, jobs or models.
        return select(ProjectMember.project_id).where(false())
    return select(ProjectMember.project_id).where(ProjectMember.user_id == user.id)


def _can_see(session: Session, user: User, project_id: uuid.UUID) -> bool:
    if user.role == Role.admin:
        return True
    if user.role != Role.trainer:
        return False
    query = select(ProjectMember.id).where(
        ProjectMember.user_id == user.id, ProjectMember.project_id == project_id
    )
    return session.scalar(query) is not None


def project_for(session: Session, user: User, project_id: uuid.UUID) -> Project:
    project = session.get(Project, project_id)
    if project is None or not _can_see(session, user, project.id):
        raise NotFound("project not found")
    return project


def dataset_for(session: Session, user: User, dataset_id: uuid.UUID) -> Dataset:
    dataset = session.get(Dataset, dataset_id)
    if dataset is None or not _can_see(session, user, dataset.project_id):
        raise NotFound("dataset not found")
    return dataset


def upload_for(session: Session, user: User, upload_id: uuid.UUID) -> DatasetUpload:
    upload = session.get(DatasetUpload, upload_id)
    if upload is None or not _can_see(session, user, upload.project_id):
        raise NotFound("upload not found")
    return upload


def job_for(session: Session, user: User, job_id: uuid.UUID) -> Job:
    job = session.get(Job, job_id)
    if job is None or not _can_see(session, user, job.project_id):
        raise NotFound("job not found")
    return job


def evaluation_for(session: Session, user: User, evaluation_id: uuid.UUID) -> Evaluation:
    evaluation = session.get(Evaluation, evaluation_id)
    if evaluation is None or not _can_see(session, user, evaluation.project_id):
        raise NotFound("evaluation not found")
    return evaluation


def artifact_for(session: Session, user: User, artifact_id: uuid.UUID) -> Artifact:
    artifact = session.get(Artifact, artifact_id)
    if artifact is None:
        raise NotFound("artifact not found")
    job = session.get(Job, artifact.job_id)
    if job is None or not _can_see(session, user, job.project_id):
        raise NotFound("artifact not found")
    return artifact


def add_member(session: Session, *, project: Project, user: User, actor: User | None) -> None:
    """Give ``user`` access to ``project`` (idempotent)."""
    exists = session.scalar(
        select(ProjectMember.id).where(
            ProjectMember.project_id == project.id, ProjectMember.user_id == user.id
        )
    )
    if exists is None:
        session.add(ProjectMember(project_id=project.id, user_id=user.id))
        session.flush()
        audit.record(
            session,
            action="project.member_added",
            actor=actor,
            target=f"project {project.id}",
            details={"user": user.email},
        )


def members(session: Session, *, project: Project) -> list[User]:
    return list(
        session.scalars(
            select(User)
            .join(ProjectMember, ProjectMember.user_id == User.id)
            .where(ProjectMember.project_id == project.id)
            .order_by(User.email)
        ).all()
    )
