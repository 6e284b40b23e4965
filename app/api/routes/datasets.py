"""Dataset versions: their records by split, statistics, previews as training sees them,
downloads, and new versions by cleaning or re-splitting."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import Query
from fastapi.responses import FileResponse

from app.api.deps import (
    CurrentReader,
    CurrentTrainer,
    Limit,
    Offset,
    SessionDep,
    SettingsDep,
    make_router,
)
from app.core.errors import NotFound
from app.datasets import preview as dataset_preview
from app.datasets import tokenization
from app.models import DatasetVersion
from app.schemas.common import Page
from app.schemas.dataset import (
    CleanRequest,
    DatasetRead,
    DatasetVersionRead,
    PreviewRead,
    RecordRead,
    RecordsPage,
    SplitName,
    SplitOptions,
    TokenizerRead,
)
from app.services import access
from app.services import datasets as service
from app.services.datasets import cleaning as cleaning

router = make_router(tags=["datasets"])


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
    return Page(
        items=[service.dataset_read(d) for d in rows], total=total, limit=limit, offset=offset
    )


@router.get("/datasets/{dataset_id}", response_model=DatasetRead)
def get_dataset(dataset_id: uuid.UUID, session: SessionDep, me: CurrentReader) -> DatasetRead:
    return service.dataset_read(access.dataset_for(session, me.user, dataset_id))


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
