from __future__ import annotations

import uuid

from fastapi import APIRouter, Request

from app.api.deps import CurrentReader, CurrentTrainer, Limit, Offset, SessionDep, SettingsDep
from app.core.errors import InvalidInput
from app.core.uploads import receive_upload
from app.models import Dataset
from app.schemas.common import Page
from app.schemas.dataset import DatasetRead, DatasetVersionRead
from app.services import access
from app.services import datasets as service

router = APIRouter(tags=["datasets"])

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "JSON array or JSONL; alpaca or chat (messages) records",
                        },
                        "name": {"type": "string", "description": "defaults to the file name"},
                        "dataset_id": {
                            "type": "string",
                            "format": "uuid",
                            "description": "add the file as a new version of this dataset",
                        },
                        "format": {
                            "type": "string",
                            "enum": ["alpaca", "chat"],
                            "description": "override format detection",
                        },
                    },
                }
            }
        },
    }
}


def dataset_read(dataset: Dataset) -> DatasetRead:
    latest = service.latest_version(dataset)
    return DatasetRead(
        id=dataset.id,
        project_id=dataset.project_id,
        name=dataset.name,
        created_at=dataset.created_at,
        version_id=latest.id,
        version=latest.number,
        records=latest.records,
        format=latest.format,
        warnings=latest.warnings,
        versions=[DatasetVersionRead.model_validate(v) for v in dataset.versions],
    )


@router.post(
    "/projects/{project_id}/datasets",
    status_code=201,
    response_model=DatasetRead,
    openapi_extra=UPLOAD_BODY,
    responses={413: {"description": "file over the upload limit"}, 422: {"description": "errors"}},
)
async def upload_dataset(
    project_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    me: CurrentTrainer,
) -> DatasetRead:
    """Upload a training file; every bad line is reported and nothing is kept if any is bad."""
    access.project_for(session, me.user, project_id)
    upload = await receive_upload(
        request, directory=settings.uploads_dir, max_bytes=settings.upload_max_bytes
    )
    try:
        dataset_id = _optional_uuid(upload.fields.get("dataset_id"), "dataset_id")
    except InvalidInput:
        upload.discard()
        raise
    dataset, _ = service.create_dataset_from_upload(
        session,
        settings=settings,
        project_id=project_id,
        upload=upload,
        user=me.user,
        name=upload.fields.get("name") or None,
        dataset_id=dataset_id,
        format=upload.fields.get("format") or None,
    )
    session.commit()
    return dataset_read(dataset)


def _optional_uuid(value: str | None, field: str) -> uuid.UUID | None:
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidInput(f"`{field}` is not a valid id") from None


@router.get("/projects/{project_id}/datasets", response_model=Page[DatasetRead])
def list_datasets(
    project_id: uuid.UUID,
    session: SessionDep,
    me: CurrentReader,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[DatasetRead]:
    access.project_for(session, me.user, project_id)
    rows, total = service.list_datasets(session, project_id=project_id, limit=limit, offset=offset)
    return Page(items=[dataset_read(d) for d in rows], total=total, limit=limit, offset=offset)


@router.get("/datasets/{dataset_id}", response_model=DatasetRead)
def get_dataset(dataset_id: uuid.UUID, session: SessionDep, me: CurrentReader) -> DatasetRead:
    return dataset_read(access.dataset_for(session, me.user, dataset_id))
