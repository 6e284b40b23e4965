"""Pages of the data step: receive a file, map its columns, import it with a split, look at a
version's statistics, records and lineage, clean it, and preview a sample as training sees it.
They call the same services as `/api/v1`."""

from __future__ import annotations

import json
import math
import uuid
from typing import Any, Literal

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from app.api.deps import (
    CurrentReader,
    CurrentTrainer,
    SessionDep,
    SettingsDep,
    in_thread,
    make_router,
    streams_upload,
)
from app.core.errors import FieldError, InvalidInput, TunelabError
from app.core.i18n import N_
from app.core.uploads import receive_dataset_files
from app.datasets import preview as dataset_preview
from app.datasets import tokenization
from app.datasets.splits import SPLITS
from app.models import Dataset, DatasetUpload, DatasetVersion, Project
from app.schemas.dataset import CleanRequest, ImportRequest, SplitOptions
from app.services import access
from app.services import datasets as service
from app.services.datasets import cleaning as cleaning
from app.services.datasets import imports as imports
from app.web import charts
from app.web.rendering import FormFields, render

router = make_router(include_in_schema=False)
RECORDS_PAGE = 20
# Titles marked for the catalog; the template translates them (``_(title)``).
FORMATS = [
    ("", N_("detect automatically")),
    ("alpaca", N_("alpaca (instruction / input / output)")),
    ("chat", N_("chat (messages with roles)")),
    ("sharegpt", N_("ShareGPT (conversations with from / value)")),
    ("prompt_completion", N_("prompt / completion")),
    ("self_instruct", N_("self-instruct (instruction + instances)")),
    ("columns", N_("my own columns (use the mapping below)")),
]
ROLES = [
    ("prompt", N_("Prompt / question"), True),
    ("input", N_("Extra input (appended to the prompt)"), False),
    ("completion", N_("Answer / completion"), True),
    ("system", N_("System prompt"), False),
]


@router.post("/projects/{project_id}/uploads")
@streams_upload
async def stage_upload(
    project_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    me: CurrentTrainer,
) -> Response:
    """The upload form without JavaScript; with it, the page posts to the API to show
    upload progress, then opens the same upload page."""
    from app.web.pages import project_page_with_error

    await in_thread(session, access.project_for, session, me.user, project_id)
    try:
        received = await receive_dataset_files(request, settings)
    except TunelabError as exc:
        return await in_thread(
            session, project_page_with_error, request, session, me, project_id, exc
        )

    def stage() -> Response:
        try:
            upload = imports.stage_upload(
                session, settings=settings, project_id=project_id, received=received, user=me.user
            )
        except TunelabError as exc:
            session.rollback()
            return project_page_with_error(request, session, me, project_id, exc)
        session.commit()
        return RedirectResponse(f"/uploads/{upload.id}", status_code=303)

    return await in_thread(session, stage)


def _upload_context(
    session: SessionDep, settings: SettingsDep, me: Any, upload: DatasetUpload
) -> dict[str, Any]:
    project = access.project_for(session, me.user, upload.project_id)
    datasets, _ = service.list_datasets(session, project_id=project.id, limit=200, offset=0)
    companions = {
        role: session.get(DatasetUpload, uuid.UUID(uid)) for role, uid in upload.companions.items()
    }
    return {
        "project": project,
        "upload": upload,
        "companions": {k: v for k, v in companions.items() if v is not None},
        "datasets": datasets,
        "formats": FORMATS,
        "roles": ROLES,
        "form": {
            "format": "",
            "mapping": upload.suggested_mapping or {},
            "name": upload.filename,
            "validation": "5",
            "test": "5",
            "seed": "0",
        },
        "import_message": None,
        "import_errors": [],
        "import_error_count": 0,
        "has_error_file": bool(upload.errors_path),
    }


@router.get("/uploads/{upload_id}")
def upload_page(
    upload_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    me: CurrentReader,
) -> HTMLResponse:
    upload = access.upload_for(session, me.user, upload_id)
    context = _upload_context(session, settings, me, upload)
    if upload.status == "invalid":
        context["import_message"] = (
            f"The last import found {upload.error_count:,} error"
            f"{'s' if upload.error_count != 1 else ''} "
            f"({upload.valid_records:,} valid records)."
        )
        context["import_errors"] = upload.errors
        context["import_error_count"] = upload.error_count
    return render(request, "datasets/upload.html", **context)


def _import_form(form: dict[str, str], upload: DatasetUpload) -> ImportRequest:
    mapping = _mapping_of(form)
    body: dict[str, Any] = {
        "name": form.get("name") or None,
        "dataset_id": form.get("dataset_id") or None,
        "format": form.get("format") or None,
        "drop_invalid": form.get("drop_invalid") == "on",
    }
    # The selects start at the detected mapping; only a changed one (or an explicit "my own
    # columns", or a file whose format was not recognised) overrides detection.
    changed = mapping != (upload.suggested_mapping or {})
    if body["format"] == "columns" or (
        not body["format"] and mapping and (changed or upload.detected_format is None)
    ):
        body["mapping"] = mapping
        body["format"] = None
    if form.get("split_method", "ratio") == "ratio":
        body["split"] = {
            "validation": _percent(form.get("validation", "5")),
            "test": _percent(form.get("test", "5")),
            "seed": form.get("seed") or 0,
        }
    else:
        body["split"] = {"validation": 0, "test": 0}
    try:
        return ImportRequest.model_validate(body)
    except ValidationError as exc:
        raise InvalidInput.from_validation(exc) from None


def _percent(value: str) -> float | str:
    try:
        return float(value) / 100
    except ValueError:
        return value  # the model's validation names the field


@router.post("/uploads/{upload_id}/import")
def import_upload(
    upload_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    me: CurrentTrainer,
    form: FormFields,
) -> Response:
    upload = access.upload_for(session, me.user, upload_id)
    try:
        options = _import_form(form, upload)
        dataset, version = imports.import_upload(
            session, settings=settings, upload=upload, options=options, user=me.user
        )
    except TunelabError as exc:
        session.rollback()
        upload = access.upload_for(session, me.user, upload_id)
        context = _upload_context(session, settings, me, upload)
        context["form"] = {**context["form"], **form, "mapping": _mapping_of(form)}
        context["import_message"] = exc.message
        context["import_errors"] = [e.as_dict() for e in exc.errors]
        context["import_error_count"] = exc.error_count
        return render(request, "datasets/upload.html", exc.status_code, **context)
    session.commit()
    return RedirectResponse(f"/datasets/{dataset.id}?version={version.number}", status_code=303)


def _mapping_of(form: dict[str, str]) -> dict[str, str]:
    return {role: form[f"map_{role}"] for role, _, _ in ROLES if form.get(f"map_{role}")}


@router.post("/uploads/{upload_id}/delete")
def delete_upload(
    upload_id: uuid.UUID,
    session: SessionDep,
    settings: SettingsDep,
    me: CurrentTrainer,
) -> Response:
    upload = access.upload_for(session, me.user, upload_id)
    project_id = upload.project_id
    imports.discard_upload(session, settings=settings, upload=upload)
    session.commit()
    return RedirectResponse(f"/projects/{project_id}#datasets", status_code=303)


# Fewer test examples than this and the evaluation's interval is too wide for a verdict: with
# 10 items, one answer more or less right moves a score by 0.1.
MIN_TEST_FOR_VERDICT = 50


def _few_test(records: int, test: int) -> dict[str, int] | None:
    """A test split of ``test`` examples out of ``records`` is too small to judge a model: how
    many it has, and the test share (in percent, at most 30) that would give
    MIN_TEST_FOR_VERDICT, or 0 when no share can. None when it is big enough."""
    if test >= MIN_TEST_FOR_VERDICT or not records:
        return None
    share = math.ceil(100 * MIN_TEST_FOR_VERDICT / records)
    return {"test": test, "needed": MIN_TEST_FOR_VERDICT, "share": share if share <= 30 else 0}


def _version_context(
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
    dataset: Dataset,
    version: DatasetVersion,
) -> dict[str, Any]:
    params = request.query_params
    split = params.get("split", "train")
    split = split if split in SPLITS else "train"
    offset = max(0, _int(params.get("offset"), 0))
    rows, total = service.read_records(
        settings, version, split=split, offset=offset, limit=RECORDS_PAGE
    )
    tokenizer = params.get("tokenizer") or ""
    max_len = _int(params.get("max_seq_length"), 0) or None
    token_stats = None
    token_error = None
    if tokenizer:
        try:
            token_stats = service.token_stats(
                session,
                settings=settings,
                version=version,
                tokenizer_name=tokenizer,
                max_seq_length=max_len,
            )
            session.commit()
        except TunelabError as exc:
            session.rollback()
            token_error = exc.message
    stats = token_stats or version.stats
    parents = {v.id: v for v in dataset.versions}
    return {
        "dataset": dataset,
        "version": version,
        "parent": parents.get(version.parent_id) if version.parent_id else None,
        "counts": service.split_counts(version),
        "few_test": _few_test(version.records, service.split_counts(version).get("test", 0)),
        "split": split,
        "rows": rows,
        "total": total,
        "offset": offset,
        "page": RECORDS_PAGE,
        "stats": stats,
        "charts": charts.stats_charts(stats),
        "tokenizer": tokenizer,
        "max_seq_length": max_len or "",
        "token_error": token_error,
        "tokenizers": tokenization.named_tokenizers(),
        "clean_message": None,
        "clean_errors": [],
    }


def _version_of(
    session: SessionDep, me: Any, dataset_id: uuid.UUID, number: int | None
) -> tuple[Dataset, DatasetVersion, Project]:
    """A dataset the user may see, one of its versions (the newest for None), its project."""
    dataset = access.dataset_for(session, me.user, dataset_id)
    version = service.version_of(dataset, number)
    return dataset, version, access.project_for(session, me.user, dataset.project_id)


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value else default
    except ValueError:
        return default


@router.get("/datasets/{dataset_id}")
def dataset_page(
    dataset_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    me: CurrentReader,
) -> HTMLResponse:
    number = _int(request.query_params.get("version"), 0) or None
    dataset, version, project = _version_of(session, me, dataset_id, number)
    context = _version_context(session, settings, request, dataset, version)
    return render(request, "datasets/detail.html", project=project, **context)


def _clean_options(form: dict[str, str]) -> CleanRequest:
    return CleanRequest.model_validate(
        {
            "dedupe": form.get("dedupe") == "on",
            "max_chars": form.get("max_chars") or None,
            "max_tokens": form.get("max_tokens") or None,
            "tokenizer": form.get("tokenizer") or None,
            "min_answer_chars": form.get("min_answer_chars") or None,
        }
    )


def _split_options(form: dict[str, str]) -> SplitOptions:
    return SplitOptions.model_validate(
        {
            "validation": _percent(form.get("validation", "5")),
            "test": _percent(form.get("test", "5")),
            "seed": form.get("seed") or 0,
        }
    )


@router.post("/datasets/{dataset_id}/versions/{number}/{action}")
def derive_version(
    dataset_id: uuid.UUID,
    number: int,
    action: Literal["clean", "split"],
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    me: CurrentTrainer,
    form: FormFields,
) -> Response:
    """The clean and re-split forms: each makes a new version and opens it."""
    dataset = access.dataset_for(session, me.user, dataset_id)
    version = service.version_by_number(dataset, number)
    try:
        try:
            if action == "clean":
                new = cleaning.clean_version(
                    session,
                    settings=settings,
                    version=version,
                    options=_clean_options(form),
                    user=me.user,
                )
            else:
                new = cleaning.resplit_version(
                    session,
                    settings=settings,
                    version=version,
                    options=_split_options(form),
                    user=me.user,
                )
        except ValidationError as exc:
            raise InvalidInput.from_validation(exc) from None
    except TunelabError as exc:
        return _version_error(
            request, session, settings, me, dataset_id, number, exc, form={**form, "for": action}
        )
    session.commit()
    return RedirectResponse(f"/datasets/{dataset_id}?version={new.number}", status_code=303)


def _version_error(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    me: Any,
    dataset_id: uuid.UUID,
    number: int,
    exc: TunelabError,
    form: dict[str, str] | None = None,
) -> HTMLResponse:
    session.rollback()
    dataset, version, project = _version_of(session, me, dataset_id, number)
    context = _version_context(session, settings, request, dataset, version)
    context["clean_message"] = exc.message
    context["clean_errors"] = exc.errors
    context["version_form"] = form or {}
    return render(request, "datasets/detail.html", exc.status_code, project=project, **context)


@router.get("/datasets/{dataset_id}/versions/{number}/preview")
def preview_page(
    dataset_id: uuid.UUID,
    number: int,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    me: CurrentReader,
) -> HTMLResponse:
    dataset, version, project = _version_of(session, me, dataset_id, number)
    params = request.query_params
    split = params.get("split", "train")
    split = split if split in SPLITS else "train"
    index = max(0, _int(params.get("index"), 0))
    names = tokenization.named_tokenizers()
    tokenizer = params.get("tokenizer") or next(iter(names), "")
    max_len = max(16, _int(params.get("max_seq_length"), 2048))
    system_prompt = params.get("system_prompt")
    if system_prompt is None:
        system_prompt = project.system_prompt or ""
    counts = service.split_counts(version)
    record = service.get_record(settings, version, split=split, index=index)
    shown = None
    error: list[FieldError] = []
    try:
        tok = tokenization.load_tokenizer(tokenizer, cache_dir=settings.model_cache_dir)
        shown = dataset_preview.preview(
            record["messages"], tok, max_seq_length=max_len, system_prompt=system_prompt or None
        )
    except TunelabError as exc:
        error = [FieldError(field="tokenizer", message=exc.message)]
    return render(
        request,
        "datasets/preview.html",
        project=project,
        dataset=dataset,
        version=version,
        split=split,
        index=index,
        count=counts.get(split, 0),
        record=record,
        record_json=json.dumps(record["messages"], ensure_ascii=False, indent=2),
        shown=shown,
        errors=error,
        tokenizer=tokenizer,
        tokenizers=names,
        max_seq_length=max_len,
        system_prompt=system_prompt,
    )
