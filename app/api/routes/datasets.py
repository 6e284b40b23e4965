from __future__ import annotations

import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import ValidationError
from starlette.background import BackgroundTask

from app.api.deps import CurrentReader, CurrentTrainer, Limit, Offset, SessionDep, SettingsDep
from app.core.errors import FieldError, InvalidInput, NotFound
from app.core.uploads import ReceivedUpload, receive_upload
from app.models import Dataset, DatasetUpload, DatasetVersion
from app.schemas.common import Page
from app.schemas.dataset import (
    CleanRequest,
    DatasetRead,
    DatasetVersionRead,
    ImportRequest,
    PreviewRead,
    RecordRead,
    RecordsPage,
    SplitName,
    SplitOptions,
    TokenizerRead,
    UploadRead,
)
from app.services import access, dataset_preview, tokenization
from app.services import dataset_cleaning as cleaning
from app.services import dataset_imports as imports
from app.services import datasets as service

router = APIRouter(tags=["datasets"])

FILE_FIELDS = ("validation_file", "test_file")


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


async def receive(request: Request, settings: SettingsDep) -> ReceivedUpload:
    return await receive_upload(
        request,
        directory=settings.uploads_dir,
        max_bytes=settings.upload_max_bytes,
        extra_files=FILE_FIELDS,
    )


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
        raise invalid_fields(exc) from None


def invalid_fields(exc: ValidationError) -> InvalidInput:
    errors = [
        FieldError(field=".".join(str(p) for p in e["loc"]) or None, message=e["msg"])
        for e in exc.errors()
    ]
    return InvalidInput(f"{errors[0].field or 'the request'}: {errors[0].message}", errors=errors)


@router.post(
    "/projects/{project_id}/uploads",
    status_code=201,
    response_model=UploadRead,
    openapi_extra=STAGE_BODY,
    responses={413: ERRORS[413]},
)
async def stage_upload(
    project_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    me: CurrentTrainer,
) -> DatasetUpload:
    """Receive a file: it is inspected (container, columns, first rows, detected format) for
    the mapping step; `POST /uploads/{id}/import` makes it a dataset."""
    access.project_for(session, me.user, project_id)
    received = await receive(request, settings)
    upload = imports.stage_upload(
        session, settings=settings, project_id=project_id, received=received, user=me.user
    )
    session.commit()
    return upload


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
    return dataset_read(dataset)


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
    access.project_for(session, me.user, project_id)
    received = await receive(request, settings)
    try:
        options = import_options(received.fields)
    except InvalidInput:
        received.discard()
        raise
    dataset, _ = imports.create_dataset_from_upload(
        session,
        settings=settings,
        project_id=project_id,
        upload=received,
        user=me.user,
        options=options,
    )
    session.commit()
    return dataset_read(dataset)


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


def version_for(session: SessionDep, me: Any, dataset_id: uuid.UUID, number: int) -> DatasetVersion:
    dataset = access.dataset_for(session, me.user, dataset_id)
    return service.version_by_number(dataset, number)


Split = Annotated[SplitName, Query()]
TokenizerName = Annotated[str | None, Query(max_length=512)]
SeqLength = Annotated[int | None, Query(ge=16, le=1_048_576)]


@router.get("/datasets/{dataset_id}/versions/{number}", response_model=DatasetVersionRead)
def get_version(
    dataset_id: uuid.UUID, number: int, session: SessionDep, me: CurrentReader
) -> DatasetVersion:
    """One version: format, split counts, lineage (what it was made from), statistics."""
    return version_for(session, me, dataset_id, number)


@router.get("/datasets/{dataset_id}/versions/{number}/records", response_model=RecordsPage)
def list_records(
    dataset_id: uuid.UUID,
    number: int,
    session: SessionDep,
    settings: SettingsDep,
    me: CurrentReader,
    split: Split = "train",
    limit: Limit = 50,
    offset: Offset = 0,
) -> RecordsPage:
    """A page of one split's records, normalized to chat messages."""
    version = version_for(session, me, dataset_id, number)
    rows, total = service.read_records(settings, version, split=split, offset=offset, limit=limit)
    items = [RecordRead(index=i, line=r.get("line"), messages=r["messages"]) for i, r in rows]
    return RecordsPage(split=split, items=items, total=total, limit=limit, offset=offset)


@router.get("/datasets/{dataset_id}/versions/{number}/stats")
def get_stats(
    dataset_id: uuid.UUID,
    number: int,
    session: SessionDep,
    settings: SettingsDep,
    me: CurrentReader,
    tokenizer: TokenizerName = None,
    max_seq_length: SeqLength = None,
) -> dict[str, Any]:
    """Statistics in characters, or in tokens of `tokenizer` (see `GET /tokenizers`) with how
    many samples are longer than `max_seq_length`."""
    version = version_for(session, me, dataset_id, number)
    if not tokenizer:
        return dict(version.stats)
    stats = service.token_stats(
        session,
        settings=settings,
        version=version,
        tokenizer_name=tokenizer,
        max_seq_length=max_seq_length,
    )
    session.commit()
    return stats


@router.get("/datasets/{dataset_id}/versions/{number}/preview", response_model=PreviewRead)
def preview_record(
    dataset_id: uuid.UUID,
    number: int,
    session: SessionDep,
    settings: SettingsDep,
    me: CurrentReader,
    tokenizer: Annotated[str, Query(min_length=1, max_length=512)],
    split: Split = "train",
    index: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    max_seq_length: Annotated[int, Query(ge=16, le=1_048_576)] = 2048,
    system_prompt: Annotated[str | None, Query(max_length=20_000)] = None,
) -> PreviewRead:
    """One record as training sees it: the model's chat template applied, which tokens carry
    the loss (the answers), and what `max_seq_length` cuts off."""
    version = version_for(session, me, dataset_id, number)
    record = service.get_record(settings, version, split=split, index=index)
    tok = tokenization.load_tokenizer(tokenizer, cache_dir=settings.model_cache_dir)
    shown = dataset_preview.preview(
        record["messages"], tok, max_seq_length=max_seq_length, system_prompt=system_prompt
    )
    return PreviewRead(
        split=split,
        index=index,
        line=record.get("line"),
        tokenizer=tokenizer,
        max_seq_length=max_seq_length,
        total_tokens=shown.total_tokens,
        loss_tokens=shown.loss_tokens,
        truncated_tokens=shown.truncated_tokens,
        template_fallback=shown.template_fallback,
        pieces=[{"text": p.text, "loss": p.loss, "truncated": p.truncated} for p in shown.pieces],
    )


@router.get(
    "/datasets/{dataset_id}/versions/{number}/download",
    response_class=FileResponse,
    responses={200: {"content": {"application/jsonl": {}}}},
)
def download_split(
    dataset_id: uuid.UUID,
    number: int,
    session: SessionDep,
    settings: SettingsDep,
    me: CurrentReader,
    split: Split = "train",
) -> FileResponse:
    """One split's normalized records as JSONL (range requests supported)."""
    version = version_for(session, me, dataset_id, number)
    path = service.split_files(settings, version).get(split)
    if path is None or not path.exists():
        raise NotFound(f"version {number} has no {split} split")
    dataset = access.dataset_for(session, me.user, dataset_id)
    return FileResponse(
        path,
        media_type="application/jsonl",
        filename=f"{dataset.name}-v{number}-{split}.jsonl",
    )


@router.post(
    "/datasets/{dataset_id}/versions/{number}/clean",
    status_code=201,
    response_model=DatasetVersionRead,
)
def clean_version(
    dataset_id: uuid.UUID,
    number: int,
    body: CleanRequest,
    session: SessionDep,
    settings: SettingsDep,
    me: CurrentTrainer,
) -> DatasetVersion:
    """Make a new version without duplicates, over-long or too-short records; the lineage
    records what was removed. Records keep their split."""
    version = version_for(session, me, dataset_id, number)
    new = cleaning.clean_version(
        session, settings=settings, version=version, options=body, user=me.user
    )
    session.commit()
    return new


@router.post(
    "/datasets/{dataset_id}/versions/{number}/split",
    status_code=201,
    response_model=DatasetVersionRead,
)
def resplit_version(
    dataset_id: uuid.UUID,
    number: int,
    body: SplitOptions,
    session: SessionDep,
    settings: SettingsDep,
    me: CurrentTrainer,
) -> DatasetVersion:
    """Make a new version with the same records under another split (ratio and seed)."""
    version = version_for(session, me, dataset_id, number)
    new = cleaning.resplit_version(
        session, settings=settings, version=version, options=body, user=me.user
    )
    session.commit()
    return new


@router.get("/tokenizers", response_model=list[TokenizerRead])
def list_tokenizers(me: CurrentReader) -> list[TokenizerRead]:
    """Tokenizers offered by name for statistics and previews (any local model folder or
    catalog model name works too)."""
    return [TokenizerRead(name=n, title=t) for n, t in tokenization.named_tokenizers().items()]
