"""Receiving training files: uploads, their inspection, import with the user's choices, the
errors of a file that did not validate, and the one-step upload-and-import."""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

from fastapi import Request, Response
from fastapi.responses import FileResponse
from pydantic import ValidationError
from starlette.background import BackgroundTask

from app.api.deps import (
    CurrentReader,
    CurrentTrainer,
    Limit,
    Offset,
    SessionDep,
    SettingsDep,
    in_thread,
    make_router,
    streams_upload,
)
from app.core.errors import FieldError, InvalidInput, NotFound
from app.core.uploads import receive_dataset_files
from app.models import DatasetUpload
from app.schemas.common import Page
from app.schemas.dataset import (
    DatasetRead,
    ImportRequest,
    UploadRead,
)
from app.services import access
from app.services import datasets as service
from app.services.datasets import imports as imports

router = make_router(tags=["datasets"])


def _file_schema(description: str) -> dict[str, str]:
    return {"type": "string", "format": "binary", "description": description}


UPLOAD_PROPERTIES: dict[str, Any] = {
    "file": _file_schema(
        "JSON array, JSONL, CSV or XLSX; alpaca, chat (messages), ShareGPT, prompt/completion "
        "or self-instruct records, or any columns with a `mapping`"
    ),
    "validation_file": _file_schema("optional separate validation file"),
    "test_file": _file_schema("optional separate test file"),
}
STAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["file"], "properties": UPLOAD_PROPERTIES}
            }
        },
    }
}
ONE_SHOT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        **UPLOAD_PROPERTIES,
                        "name": {"type": "string", "description": "defaults to the file name"},
                        "dataset_id": {
                            "type": "string",
                            "format": "uuid",
                            "description": "add the file as a new version of this dataset",
                        },
                        "format": {
                            "type": "string",
                            "enum": [
                                "alpaca",
                                "chat",
                                "sharegpt",
                                "prompt_completion",
                                "self_instruct",
                                "columns",
                            ],
                            "description": "override format detection",
                        },
                        "mapping": {
                            "type": "string",
                            "description": 'JSON, e.g. {"prompt": "question", "completion": "answer"}',
                        },
                        "drop_invalid": {"type": "boolean"},
                        "validation": {"type": "number", "description": "fraction, default 0.05"},
                        "test": {"type": "number", "description": "fraction, default 0.05"},
                        "seed": {"type": "integer"},
                    },
                }
            }
        },
    }
}
ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"description": "file over the upload limit"},
    422: {"description": "errors"},
}


def import_options(fields: dict[str, str]) -> ImportRequest:
    """The one-shot upload's form fields as an import request (errors name the field)."""
    body: dict[str, Any] = {
        key: fields[key] for key in ("name", "dataset_id", "format") if fields.get(key)
    }
    if fields.get("mapping"):
        try:
            body["mapping"] = json.loads(fields["mapping"])
        except ValueError:
            raise InvalidInput(
                '`mapping` must be JSON, e.g. {"prompt": "question", "completion": "answer"}',
                errors=[FieldError(field="mapping", message="not valid JSON")],
            ) from None
    if fields.get("drop_invalid"):
        body["drop_invalid"] = fields["drop_invalid"].lower() in ("1", "true", "on", "yes")
    split = {key: fields[key] for key in ("validation", "test", "seed") if fields.get(key)}
    if split:
        body["split"] = split
    try:
        return ImportRequest.model_validate(body)
    except ValidationError as exc:
        raise InvalidInput.from_validation(exc) from None


@router.post(
    "/projects/{project_id}/uploads",
    status_code=201,
    response_model=UploadRead,
    openapi_extra=STAGE_BODY,
    responses={413: ERRORS[413]},
)
@streams_upload
async def stage_upload(
    project_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    me: CurrentTrainer,
) -> DatasetUpload:
    """Receive a file: it is inspected (container, columns, first rows, detected format) for
    the mapping step; `POST /uploads/{id}/import` makes it a dataset."""
    await in_thread(session, access.project_for, session, me.user, project_id)
    received = await receive_dataset_files(request, settings)

    def stage() -> DatasetUpload:
        upload = imports.stage_upload(
            session, settings=settings, project_id=project_id, received=received, user=me.user
        )
        session.commit()
        return upload

    return await in_thread(session, stage)


@router.get("/projects/{project_id}/uploads", response_model=Page[UploadRead])
def list_uploads(
    project_id: uuid.UUID,
    session: SessionDep,
    me: CurrentReader,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[UploadRead]:
    """Uploads not imported yet (staged, or invalid with their errors)."""
    access.project_for(session, me.user, project_id)
    rows, total = service.list_uploads(session, project_id=project_id, limit=limit, offset=offset)
    return Page(
        items=[UploadRead.model_validate(r) for r in rows], total=total, limit=limit, offset=offset
    )


@router.get("/uploads/{upload_id}", response_model=UploadRead)
def get_upload(upload_id: uuid.UUID, session: SessionDep, me: CurrentReader) -> DatasetUpload:
    """An upload with its validation progress (`progress_bytes` of `size_bytes`) and errors."""
    return access.upload_for(session, me.user, upload_id)


@router.get(
    "/uploads/{upload_id}/errors.csv",
    response_class=FileResponse,
    responses={200: {"content": {"text/csv": {}}}},
)
def download_errors(
    upload_id: uuid.UUID, session: SessionDep, settings: SettingsDep, me: CurrentReader
) -> FileResponse:
    """Every error found in the file (not only the first 200), as CSV: line, field, message."""
    upload = access.upload_for(session, me.user, upload_id)
    path = imports.errors_file(settings, upload)
    name = f"{Path(upload.filename or 'upload').stem}-errors.csv"
    if path is not None and path.exists():
        return FileResponse(path, media_type="text/csv; charset=utf-8", filename=name)
    if not upload.errors:
        raise NotFound("this upload has no errors")
    fd, tmp = tempfile.mkstemp(suffix=".csv")
    os.close(fd)
    imports.write_errors_csv(upload, Path(tmp))
    return FileResponse(
        tmp,
        media_type="text/csv; charset=utf-8",
        filename=name,
        background=BackgroundTask(Path(tmp).unlink, missing_ok=True),
    )


@router.post(
    "/uploads/{upload_id}/import",
    status_code=201,
    response_model=DatasetRead,
    responses={422: ERRORS[422], 409: {"description": "being validated already"}},
)
def import_upload(
    upload_id: uuid.UUID,
    body: ImportRequest,
    session: SessionDep,
    settings: SettingsDep,
    me: CurrentTrainer,
) -> DatasetRead:
    """Validate the upload with these choices and make it a dataset version (or a new version
    of `dataset_id`). A file with errors gets 422 with the errors; nothing is created."""
    upload = access.upload_for(session, me.user, upload_id)
    dataset, _ = imports.import_upload(
        session, settings=settings, upload=upload, options=body, user=me.user
    )
    session.commit()
    return service.dataset_read(dataset)


@router.delete("/uploads/{upload_id}", status_code=204)
def delete_upload(
    upload_id: uuid.UUID, session: SessionDep, settings: SettingsDep, me: CurrentTrainer
) -> Response:
    upload = access.upload_for(session, me.user, upload_id)
    imports.discard_upload(session, settings=settings, upload=upload)
    session.commit()
    return Response(status_code=204)


@router.post(
    "/projects/{project_id}/datasets",
    status_code=201,
    response_model=DatasetRead,
    openapi_extra=ONE_SHOT_BODY,
    responses=ERRORS,
)
@streams_upload
async def upload_dataset(
    project_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    me: CurrentTrainer,
) -> DatasetRead:
    """Upload and import in one request. Every bad line is reported; on errors nothing is
    created, and the 422 names the `upload_id` whose full error list can be downloaded or
    imported again with other choices (e.g. `drop_invalid`)."""
    await in_thread(session, access.project_for, session, me.user, project_id)
    received = await receive_dataset_files(request, settings)
    try:
        options = import_options(received.fields)
    except InvalidInput:
        received.discard()
        raise

    def create() -> DatasetRead:
        # Validation reads the whole file: on the thread pool, so /healthz and every other
        # request keep being answered meanwhile.
        dataset, _ = imports.create_dataset_from_upload(
            session,
            settings=settings,
            project_id=project_id,
            upload=received,
            user=me.user,
            options=options,
        )
        session.commit()
        return service.dataset_read(dataset)

    return await in_thread(session, create)
