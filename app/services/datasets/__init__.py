"""Training data as dataset versions: immutable, content-addressed, with a fixed train /
validation / test split. Reading versions and their records, the storage quota, token
statistics, and the helpers that make a version; receiving and importing files is in
`dataset_imports`, cleaning and re-splitting in `dataset_cleaning`.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.errors import NotFound, PayloadTooLarge
from app.datasets import stats as dataset_stats
from app.datasets import tokenization
from app.datasets.splits import SPLITS
from app.models import Dataset, DatasetUpload, DatasetVersion, UploadStatus, User
from app.schemas.dataset import DatasetRead, DatasetVersionRead


def version_digest(content: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def version_dir(settings: Settings, digest: str) -> Path:
    return settings.datasets_dir / "v" / digest[:2] / digest


def version_by_digest(session: Session, dataset: Dataset, digest: str) -> DatasetVersion | None:
    return session.scalar(
        select(DatasetVersion).where(
            DatasetVersion.dataset_id == dataset.id, DatasetVersion.digest == digest
        )
    )


def add_version(session: Session, dataset: Dataset, **fields: Any) -> DatasetVersion:
    number = (
        session.scalar(
            select(func.max(DatasetVersion.number)).where(DatasetVersion.dataset_id == dataset.id)
        )
        or 0
    ) + 1
    version = DatasetVersion(dataset_id=dataset.id, number=number, token_stats={}, **fields)
    session.add(version)
    session.flush()
    session.refresh(dataset)
    return version


# --- quota -----------------------------------------------------------------------------------


def storage_used(session: Session, *, user: User) -> int:
    """Bytes of uploaded files that count against ``user``'s quota: versions made from their
    uploads, and uploads not imported yet."""
    versions = session.scalar(
        select(func.coalesce(func.sum(DatasetVersion.size_bytes), 0)).where(
            DatasetVersion.uploaded_by_id == user.id
        )
    )
    pending = session.scalar(
        select(func.coalesce(func.sum(DatasetUpload.size_bytes), 0)).where(
            DatasetUpload.user_id == user.id,
            DatasetUpload.status != UploadStatus.imported.value,
        )
    )
    return int(versions or 0) + int(pending or 0)


def check_quota(session: Session, *, settings: Settings, user: User, adding: int) -> None:
    quota = user.storage_quota_bytes or settings.user_quota_bytes
    used = storage_used(session, user=user)
    if used + adding > quota:
        raise PayloadTooLarge(
            f"this upload would take your storage to {(used + adding) / 1e6:.1f} MB, over your "
            f"quota of {quota / 1e6:.1f} MB; delete old datasets or uploads, or ask an admin "
            "for more"
        )


# --- reading versions ------------------------------------------------------------------------


def list_datasets(
    session: Session, *, project_id: uuid.UUID, limit: int, offset: int
) -> tuple[list[Dataset], int]:
    """A project's datasets, newest first."""
    where = Dataset.project_id == project_id
    total = session.scalar(select(func.count()).select_from(Dataset).where(where)) or 0
    rows = session.scalars(
        select(Dataset).where(where).order_by(Dataset.created_at.desc()).limit(limit).offset(offset)
    ).all()
    return list(rows), total


def list_uploads(
    session: Session, *, project_id: uuid.UUID, limit: int, offset: int
) -> tuple[list[DatasetUpload], int]:
    """A project's uploads not imported yet, newest first."""
    where = (DatasetUpload.project_id == project_id) & (
        DatasetUpload.status != UploadStatus.imported.value
    )
    total = session.scalar(select(func.count()).select_from(DatasetUpload).where(where)) or 0
    rows = session.scalars(
        select(DatasetUpload)
        .where(where)
        .order_by(DatasetUpload.created_at.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return list(rows), total


def latest_version(dataset: Dataset) -> DatasetVersion:
    if not dataset.versions:
        raise NotFound("dataset has no versions")
    return dataset.versions[-1]


def version_by_number(dataset: Dataset, number: int) -> DatasetVersion:
    for version in dataset.versions:
        if version.number == number:
            return version
    raise NotFound(f"dataset has no version {number}")


def version_of(dataset: Dataset, number: int | None) -> DatasetVersion:
    """Version ``number`` of ``dataset``, or its newest when no number is given."""
    return version_by_number(dataset, number) if number else latest_version(dataset)


def records_file(settings: Settings, version: DatasetVersion) -> Path:
    """The records a job trains on: the version's training split."""
    return settings.data_dir / version.records_path


def split_files(settings: Settings, version: DatasetVersion) -> dict[str, Path]:
    """Each split's records file. Versions from before splits existed are all training."""
    train = records_file(settings, version)
    if not version.split or version.split.get("method") == "none":
        return {"train": train}
    return {name: train.with_name(f"{name}.jsonl") for name in SPLITS}


def split_counts(version: DatasetVersion) -> dict[str, int]:
    counts = (version.split or {}).get("counts")
    return dict(counts) if counts else {"train": version.records, "validation": 0, "test": 0}


def read_records(
    settings: Settings, version: DatasetVersion, *, split: str, offset: int, limit: int
) -> tuple[list[tuple[int, dict[str, Any]]], int]:
    """A page of one split's records as (index, record)."""
    total = split_counts(version).get(split, 0)
    path = split_files(settings, version).get(split)
    rows: list[tuple[int, dict[str, Any]]] = []
    if path is None or not path.exists() or offset >= total:
        return rows, total
    for index, line in enumerate(record_lines(path)):
        if index >= offset + limit:
            break
        if index >= offset:
            rows.append((index, orjson.loads(line)))
    return rows, total


def get_record(
    settings: Settings, version: DatasetVersion, *, split: str, index: int
) -> dict[str, Any]:
    rows, total = read_records(settings, version, split=split, offset=index, limit=1)
    if not rows:
        raise NotFound(f"the {split} split has {total:,} records; there is no record {index}")
    return rows[0][1]


def record_lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                yield line


def all_record_files(settings: Settings, version: DatasetVersion) -> list[Path]:
    return [p for p in split_files(settings, version).values() if p.exists()]


# --- statistics with a tokenizer -------------------------------------------------------------


def token_stats(
    session: Session,
    *,
    settings: Settings,
    version: DatasetVersion,
    tokenizer_name: str,
    max_seq_length: int | None,
) -> dict[str, Any]:
    """Lengths in the tokens of a model's tokenizer; computed once and kept on the version."""
    key = f"{tokenizer_name}@{max_seq_length or ''}"
    cached = (version.token_stats or {}).get(key)
    if cached is not None:
        return dict(cached)
    tokenizer = tokenization.load_tokenizer(tokenizer_name, cache_dir=settings.model_cache_dir)
    stats = dataset_stats.compute_stats_of(
        all_record_files(settings, version), tokenizer=tokenizer, max_seq_length=max_seq_length
    )
    version.token_stats = {**(version.token_stats or {}), key: stats}
    session.flush()
    return stats


def dataset_read(dataset: Dataset) -> DatasetRead:
    latest = latest_version(dataset)
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
