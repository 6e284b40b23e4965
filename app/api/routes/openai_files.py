"""OpenAI's Files API for fine-tuning data: ``/v1/files``. A file is checked line by line when
it arrives (errors in OpenAI's error object, with every line and field), kept as sent, and
staged as an upload of the caller's API project, where the data page shows it."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from app.api.deps import (
    CurrentReader,
    CurrentTrainer,
    SessionDep,
    SettingsDep,
    in_thread,
    make_router,
    streams_upload,
)
from app.core.errors import TunelabError
from app.core.uploads import receive_upload
from app.services.openai_compat import files as service
from app.services.openai_compat import jobs as jobs_service
from app.services.openai_compat import names
from app.services.openai_compat.errors import OpenAIError, from_tunelab

router = make_router(prefix="/v1", tags=["openai-compatible"])
F = TypeVar("F", bound=Callable[..., Any])

FILE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "JSONL: chat records (messages, optional weight "
                            "and tools) or preference records (input, preferred_output, "
                            "non_preferred_output)",
                        },
                        "purpose": {"type": "string", "enum": list(service.PURPOSES)},
                    },
                }
            }
        },
    }
}
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "OpenAI's error object: {error: {message, type, param, code}}"},
    404: {"description": "no such object"},
}


def error_response(exc: Exception) -> JSONResponse:
    error = exc if isinstance(exc, OpenAIError) else from_tunelab(exc)  # type: ignore[arg-type]
    return JSONResponse(error.body(), status_code=error.status)


def openai_errors(route: F) -> F:
    """Answer OpenAI's error object for the errors of a plain ``def`` route."""

    @functools.wraps(route)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return route(*args, **kwargs)
        except (OpenAIError, TunelabError) as exc:
            return error_response(exc)

    return run  # type: ignore[return-value]


def page(data: list[Any], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "has_more": has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


@router.post("/files", response_model=None, openapi_extra=FILE_BODY, responses={**ERRORS, 413: {}})
@streams_upload
async def create_file(
    request: Request, session: SessionDep, settings: SettingsDep, me: CurrentTrainer
) -> Any:
    """Upload a fine-tuning file (multipart: `file`, `purpose=fine-tune`)."""
    try:
        received = await receive_upload(
            request, directory=settings.uploads_dir, max_bytes=settings.upload_max_bytes
        )
    except TunelabError as exc:
        return error_response(exc)

    def create() -> dict[str, Any]:
        try:
            row = service.create_file(session, settings=settings, user=me.user, received=received)
            session.commit()
        except BaseException:
            session.rollback()
            raise
        return service.file_object(row)

    try:
        return await in_thread(session, create)
    except (OpenAIError, TunelabError) as exc:
        return error_response(exc)


@router.get("/files", response_model=None, responses=ERRORS)
@openai_errors
def list_files(
    session: SessionDep,
    me: CurrentReader,
    after: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
    purpose: Annotated[str | None, Query(max_length=32, pattern="^[a-z_-]+$")] = None,
) -> Any:
    """Your fine-tuning files, newest first (cursor: `after` a file id)."""
    rows, more = service.list_files(
        session, me.user, after=after, limit=limit, order=order, purpose=purpose
    )
    return page([service.file_object(r) for r in rows], more)


@router.get("/files/{file_id}", response_model=None, responses=ERRORS)
@openai_errors
def retrieve_file(file_id: str, session: SessionDep, me: CurrentReader) -> Any:
    if file_id.startswith(names.RESULTS):
        job = jobs_service.results_job(session, me.user, file_id)
        return results_object(file_id, job.created_at, jobs_service.results_csv(session, job))
    return service.file_object(service.get_file(session, me.user, file_id))


def results_object(file_id: str, created: Any, content: bytes) -> dict[str, Any]:
    return {
        "id": file_id,
        "object": "file",
        "bytes": len(content),
        "created_at": service.unix(created),
        "filename": "step_metrics.csv",
        "purpose": "fine-tune-results",
        "status": "processed",
        "status_details": None,
        "expires_at": None,
    }


@router.get(
    "/files/{file_id}/content",
    response_model=None,
    responses={**ERRORS, 200: {"content": {"application/octet-stream": {}}}},
)
@openai_errors
def file_content(
    file_id: str, session: SessionDep, settings: SettingsDep, me: CurrentReader
) -> Any:
    """The file as it was sent; for a job's results file, its step metrics as CSV."""
    if file_id.startswith(names.RESULTS):
        job = jobs_service.results_job(session, me.user, file_id)
        return Response(jobs_service.results_csv(session, job), media_type="text/csv")
    row = service.get_file(session, me.user, file_id)
    return FileResponse(
        settings.data_dir / row.path,
        media_type="application/octet-stream",
        filename=f"{names.file_id(row.id)}.jsonl",
    )


@router.delete("/files/{file_id}", response_model=None, responses=ERRORS)
@openai_errors
def delete_file(
    file_id: str, session: SessionDep, settings: SettingsDep, me: CurrentTrainer
) -> Any:
    """Delete a file (jobs made from it keep their data: a dataset version)."""
    row = service.get_file(session, me.user, file_id)
    service.delete_file(session, settings=settings, file=row)
    session.commit()
    return {"id": file_id, "object": "file", "deleted": True}
