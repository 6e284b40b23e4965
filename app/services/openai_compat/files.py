"""``/v1/files``: a fine-tuning file is checked line by line when it arrives, kept as sent,
and staged as a tunelab upload in its owner's API project (so it shows on the data page)."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.errors import FieldError, NotFound
from app.core.uploads import ReceivedUpload
from app.models import DatasetUpload, OpenAIFile, OpenAIProject, Project, UploadStatus, User
from app.schemas.project import ProjectCreate
from app.services import access, projects
from app.services.datasets import imports
from app.services.openai_compat import names
from app.services.openai_compat.errors import OpenAIError
from app.services.openai_compat.file_format import check_file

PURPOSES = ("fine-tune",)
API_PROJECT = "API"


def unix(moment: Any) -> int:
    return int(moment.timestamp())


# --- projects ------------------------------------------------------------------------------


def default_project(session: Session, user: User) -> Project:
    """The user's project for files and jobs that name none, made on first use."""
    row = session.get(OpenAIProject, user.id)
    if row is not None:
        project = session.get(Project, row.project_id)
        if project is not None:
            return project
        session.delete(row)
        session.flush()
    project = projects.create_project(
        session,
        data=ProjectCreate(
            name=API_PROJECT,
            task_description="Files and fine-tuning jobs sent through the OpenAI-compatible API "
            "(/v1/files, /v1/fine_tuning/jobs) that name no project.",
        ),
        creator=user,
    )
    session.add(OpenAIProject(user_id=user.id, project_id=project.id))
    session.flush()
    return project


def project_named(session: Session, user: User, value: str, *, param: str) -> Project:
    """``metadata.project``: a project's id, or the name of one the user can see."""
    try:
        project_id: uuid.UUID | None = uuid.UUID(value)
    except ValueError:
        project_id = None
    if project_id is not None:
        try:
            return access.project_for(session, user, project_id)
        except NotFound:
            raise OpenAIError(
                404, f"No such project: {value!r}", param=param, code="not_found"
            ) from None
    found = session.scalars(
        select(Project)
        .where(Project.name == value, Project.id.in_(access.visible_projects(user)))
        .order_by(Project.created_at.desc())
    ).first()
    if found is None:
        raise OpenAIError(404, f"No such project: {value!r}", param=param, code="not_found")
    return found


# --- files ---------------------------------------------------------------------------------


def storage(settings: Settings, file_id: uuid.UUID) -> Path:
    return settings.data_dir / "openai" / "files" / file_id.hex


def create_file(
    session: Session, *, settings: Settings, user: User, received: ReceivedUpload
) -> OpenAIFile:
    """Check the file, keep it, and stage it as an upload of the user's API project."""
    try:
        purpose = received.fields.get("purpose", "")
        if purpose not in PURPOSES:
            raise OpenAIError(
                400,
                f"purpose {purpose!r} is not supported here: tunelab keeps files for "
                "fine-tuning only (purpose=fine-tune)",
                param="purpose",
                code="invalid_purpose",
            )
        assert received.path is not None
        project = default_project(session, user)
        row_id = uuid.uuid4()
        folder = storage(settings, row_id)
        folder.mkdir(parents=True, exist_ok=True)
        try:
            records = folder / "records.jsonl"
            check = check_file(received.path, records)
            if not check.ok:
                raise _invalid(received.filename or "the file", check)
            original = folder / "original"
            received.path.replace(original)
            received.path = None
            row = OpenAIFile(
                id=row_id,
                user_id=user.id,
                project_id=project.id,
                filename=(received.filename.replace("\x00", "") or "file.jsonl")[:255],
                purpose=purpose,
                kind=check.kind or "chat",
                size_bytes=original.stat().st_size,
                records=check.records,
                path=str(original.relative_to(settings.data_dir)),
                converted_path=str(records.relative_to(settings.data_dir)),
                features=sorted(check.features),
            )
            row.upload_id = stage_records(
                session, settings=settings, user=user, file=row, project_id=project.id
            ).id
            session.add(row)
            session.flush()
            return row
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
    finally:
        received.discard()


def stage_records(
    session: Session, *, settings: Settings, user: User, file: OpenAIFile, project_id: uuid.UUID
) -> DatasetUpload:
    """The file's records (tunelab's chat form) as a staged upload of ``project_id``."""
    copy = settings.uploads_dir / f"openai-{uuid.uuid4().hex}.jsonl"
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(settings.data_dir / file.converted_path, copy)
    stem = Path(file.filename).stem or "file"
    received = ReceivedUpload(path=copy, filename=f"{stem}.jsonl", size=copy.stat().st_size)
    return imports.stage_upload(
        session, settings=settings, project_id=project_id, received=received, user=user
    )


def _invalid(name: str, check: Any) -> OpenAIError:
    errors = [FieldError(message=e.message, field=e.field, line=e.line) for e in check.errors]
    if not errors:
        return OpenAIError(
            400, f"{name} holds no records to train on", param="file", code="invalid_file_format"
        )
    first = check.errors[0]
    where = f"line {first.line}: " if first.line else ""
    more = f" ({check.error_count:,} errors in all)" if check.error_count > 1 else ""
    return OpenAIError(
        400,
        f"{name} is not valid: {where}{first.message}{more}",
        param="file",
        code="invalid_file_format",
        errors=errors,
        extra={"error_count": check.error_count, "line": first.line},
    )


def get_file(session: Session, user: User, value: str, *, param: str | None = None) -> OpenAIFile:
    row = session.get(OpenAIFile, names.parse_file(value, param=param))
    if row is None or not _visible(session, user, row.project_id):
        raise OpenAIError(404, f"No such file: {value!r}", param=param, code="not_found")
    return row


def _visible(session: Session, user: User, project_id: uuid.UUID) -> bool:
    try:
        access.project_for(session, user, project_id)
    except NotFound:
        return False
    return True


def list_files(
    session: Session, user: User, *, after: str | None, limit: int, order: str, purpose: str | None
) -> tuple[list[OpenAIFile], bool]:
    conditions: list[Any] = [OpenAIFile.project_id.in_(access.visible_projects(user))]
    if purpose:
        conditions.append(OpenAIFile.purpose == purpose)
    newest_first = order != "asc"
    if after:
        cursor = get_file(session, user, after, param="after")
        if newest_first:
            conditions.append(
                or_(
                    OpenAIFile.created_at < cursor.created_at,
                    and_(OpenAIFile.created_at == cursor.created_at, OpenAIFile.id < cursor.id),
                )
            )
        else:
            conditions.append(
                or_(
                    OpenAIFile.created_at > cursor.created_at,
                    and_(OpenAIFile.created_at == cursor.created_at, OpenAIFile.id > cursor.id),
                )
            )
    ordering = (
        (OpenAIFile.created_at.desc(), OpenAIFile.id.desc())
        if newest_first
        else (OpenAIFile.created_at, OpenAIFile.id)
    )
    rows = list(
        session.scalars(select(OpenAIFile).where(*conditions).order_by(*ordering).limit(limit + 1))
    )
    return rows[:limit], len(rows) > limit


def delete_file(session: Session, *, settings: Settings, file: OpenAIFile) -> None:
    """The file and its staged upload (not yet a dataset); jobs keep their dataset versions."""
    upload = session.get(DatasetUpload, file.upload_id) if file.upload_id else None
    if upload is not None and upload.status != UploadStatus.imported.value:
        imports.discard_upload(session, settings=settings, upload=upload)
    shutil.rmtree(storage(settings, file.id), ignore_errors=True)
    session.delete(file)
    session.flush()


def file_object(file: OpenAIFile) -> dict[str, Any]:
    return {
        "id": names.file_id(file.id),
        "object": "file",
        "bytes": file.size_bytes,
        "created_at": unix(file.created_at),
        "filename": file.filename,
        "purpose": file.purpose,
        "status": "processed",
        "status_details": None,
        "expires_at": None,
    }
