from __future__ import annotations

import shutil
import uuid

from fastapi import Response

from app.api.deps import (
    CurrentAdmin,
    CurrentReader,
    CurrentTrainer,
    Limit,
    Offset,
    SessionDep,
    SettingsDep,
    make_router,
)
from app.core.i18n import gettext
from app.schemas.common import Page
from app.schemas.project import GuideStepRead, ProjectCreate, ProjectRead, ProjectUpdate
from app.services import access
from app.services import projects as service

router = make_router(prefix="/projects", tags=["projects"])


@router.post("", status_code=201, response_model=ProjectRead)
def create_project(body: ProjectCreate, session: SessionDep, me: CurrentTrainer) -> ProjectRead:
    project = service.create_project(session, data=body, creator=me.user)
    session.commit()
    return ProjectRead.model_validate(project)


@router.get("", response_model=Page[ProjectRead])
def list_projects(
    session: SessionDep, me: CurrentReader, limit: Limit = 50, offset: Offset = 0
) -> Page[ProjectRead]:
    rows, total = service.list_projects(session, user=me.user, limit=limit, offset=offset)
    return Page(
        items=[ProjectRead.model_validate(p) for p in rows], total=total, limit=limit, offset=offset
    )


@router.get("/{project_id}", response_model=ProjectRead)
def get_project(project_id: uuid.UUID, session: SessionDep, me: CurrentReader) -> ProjectRead:
    return ProjectRead.model_validate(access.project_for(session, me.user, project_id))


@router.patch("/{project_id}", response_model=ProjectRead)
def update_project(
    project_id: uuid.UUID, body: ProjectUpdate, session: SessionDep, me: CurrentAdmin
) -> ProjectRead:
    """Set a project's priority (admins): its waiting jobs are claimed before those of
    projects of lower priority; among equal priorities, projects take turns."""
    project = access.project_for(session, me.user, project_id)
    service.set_priority(session, project=project, priority=body.priority)
    session.commit()
    return ProjectRead.model_validate(project)


@router.get("/{project_id}/guide", response_model=list[GuideStepRead])
def get_guide(project_id: uuid.UUID, session: SessionDep, me: CurrentReader) -> list[GuideStepRead]:
    """The guided path (goal → data → model and method → train → check → use) from the
    project's state: which steps are done, which is current, where each one's action is; the
    title and explanation in the caller's language."""
    project = access.project_for(session, me.user, project_id)
    return [
        GuideStepRead(
            key=s.key,
            title=gettext(s.title),
            explanation=gettext(s.explanation),
            done=s.done,
            current=s.current,
            href=s.href,
        )
        for s in service.guide(session, project=project)
    ]


@router.delete("/{project_id}", status_code=204)
def delete_project(
    project_id: uuid.UUID, session: SessionDep, settings: SettingsDep, me: CurrentTrainer
) -> Response:
    """Delete a project with its datasets, jobs, metrics and artifacts (not while a job runs)."""
    project = access.project_for(session, me.user, project_id)
    folders = service.delete_project(session, project=project, actor=me.user, ip=me.ip)
    session.commit()
    for folder in folders:
        shutil.rmtree(settings.data_dir / folder, ignore_errors=True)
    return Response(status_code=204)
