from __future__ import annotations

import uuid

from fastapi import APIRouter

from app.api.deps import Limit, Offset, SessionDep
from app.schemas.common import Page
from app.schemas.project import ProjectCreate, ProjectRead
from app.services import projects as service

router = APIRouter(prefix="/projects", tags=["projects"])


@router.post("", status_code=201, response_model=ProjectRead)
def create_project(body: ProjectCreate, session: SessionDep) -> ProjectRead:
    project = service.create_project(session, data=body)
    session.commit()
    return ProjectRead.model_validate(project)


@router.get("", response_model=Page[ProjectRead])
def list_projects(session: SessionDep, limit: Limit = 50, offset: Offset = 0) -> Page[ProjectRead]:
    rows, total = service.list_projects(session, limit=limit, offset=offset)
    return Page(
        items=[ProjectRead.model_validate(p) for p in rows], total=total, limit=limit, offset=offset
    )


@router.get("/{project_id}", response_model=ProjectRead)
def get_project(project_id: uuid.UUID, session: SessionDep) -> ProjectRead:
    return ProjectRead.model_validate(service.get_project(session, project_id=project_id))
