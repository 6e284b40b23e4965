"""Uploading, validating and storing training data as immutable, content-addressed versions."""

from __future__ import annotations

import contextlib
import json
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.errors import FieldError, InvalidDataset, InvalidInput, NotFound, PayloadTooLarge
from app.core.uploads import ReceivedUpload
from app.models import Dataset, DatasetVersion, User
from app.services import dataset_formats, dataset_parsing
from app.services.projects import get_project


def create_dataset_from_upload(
    session: Session,
    *,
    settings: Settings,
    project_id: uuid.UUID,
    upload: ReceivedUpload,
    user: User,
    name: str | None = None,
    dataset_id: uuid.UUID | None = None,
    format: str | None = None,
) -> tuple[Dataset, DatasetVersion]:
    """Validate an uploaded file and store it as a new dataset (or a new version of one).

    Nothing is kept when the file is invalid: the upload is deleted and no row is written.
    """
    created_files: list[Path] = []
    try:
        project = get_project(session, project_id=project_id)
        dataset = None
        if dataset_id is not None:
            dataset = session.get(Dataset, dataset_id)
            if dataset is None or dataset.project_id != project.id:
                raise NotFound("dataset not found")
        if format and format not in dataset_formats.FORMATS:
            known = ", ".join(sorted(dataset_formats.FORMATS))
            raise InvalidInput(
                f"unknown format `{format}`: use one of {known}",
                errors=[FieldError(field="format", message=f"use one of {known}")],
            )
        assert upload.path is not None
        check_quota(session, settings=settings, user=user, adding=upload.size)
        staging = upload.path.with_suffix(".records.jsonl")
        report = dataset_parsing.validate_file(upload.path, dest=staging, format=format or None)
        if not report.ok:
            raise _invalid(report, upload.filename)

        sha = report.sha256
        store = settings.datasets_dir / sha[:2] / sha
        store.mkdir(parents=True, exist_ok=True)
        raw_path, records_path = store / "raw", store / "records.jsonl"
        for src, dst in ((upload.path, raw_path), (staging, records_path)):
            if dst.exists():
                src.unlink()
            else:
                src.replace(dst)
                created_files.append(dst)

        if dataset is not None:
            existing = session.scalar(
                select(DatasetVersion).where(
                    DatasetVersion.dataset_id == dataset.id, DatasetVersion.sha256 == sha
                )
            )
            if existing is not None:
                return dataset, existing
        else:
            dataset = Dataset(
                project_id=project.id,
                name=(name or upload.filename or "dataset")[:255],
            )
            session.add(dataset)
            session.flush()

        number = (
            session.scalar(
                select(func.max(DatasetVersion.number)).where(
                    DatasetVersion.dataset_id == dataset.id
                )
            )
            or 0
        ) + 1
        version = DatasetVersion(
            dataset_id=dataset.id,
            number=number,
            sha256=sha,
            format=report.format or "unknown",
            container=report.container or "unknown",
            records=report.records,
            size_bytes=raw_path.stat().st_size,
            original_filename=upload.filename,
            raw_path=str(raw_path.relative_to(settings.data_dir)),
            records_path=str(records_path.relative_to(settings.data_dir)),
            stats=compute_stats(records_path),
            warnings=list(report.warnings),
            uploaded_by_id=user.id,
        )
        session.add(version)
        session.flush()
        session.refresh(dataset)
        return dataset, version
    except BaseException:
        for path in created_files:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        raise
    finally:
        upload.discard()
        if upload.path is not None:
            with contextlib.suppress(FileNotFoundError):
                upload.path.with_suffix(".records.jsonl").unlink()


def storage_used(session: Session, *, user: User) -> int:
    """Bytes of uploaded files that count against ``user``'s quota."""
    return int(
        session.scalar(
            select(func.coalesce(func.sum(DatasetVersion.size_bytes), 0)).where(
                DatasetVersion.uploaded_by_id == user.id
            )
        )
        or 0
    )


def check_quota(session: Session, *, settings: Settings, user: User, adding: int) -> None:
    quota = user.storage_quota_bytes or settings.user_quota_bytes
    used = storage_used(session, user=user)
    if used + adding > quota:
        raise PayloadTooLarge(
            f"this upload would take your storage to {(used + adding) / 1e6:.1f} MB, over your "
            f"quota of {quota / 1e6:.1f} MB; delete old datasets or ask an admin for more"
        )


def _invalid(report: dataset_parsing.ValidationReport, filename: str) -> InvalidDataset:
    errors = [FieldError(message=e.message, field=e.field, line=e.line) for e in report.errors]
    if report.error_count:
        first = report.errors[0]
        where = f"line {first.line}: " if first.line else ""
        more = f" ({report.error_count} errors in all)" if report.error_count > 1 else ""
        message = f"{filename or 'the file'} is not valid: {where}{first.message}{more}"
    else:
        message = f"{filename or 'the file'} has no records to train on"
        errors = [FieldError(message="the file holds no records")]
    return InvalidDataset(message, errors=errors, error_count=max(report.error_count, len(errors)))


def compute_stats(records_path: Path) -> dict[str, Any]:
    """Counts and lengths in characters (not bytes, so Chinese text is measured fairly)."""
    count = turns = 0
    prompt_chars: list[int] = []
    answer_chars: list[int] = []
    with records_path.open(encoding="utf-8") as fh:
        for line in fh:
            messages = json.loads(line)["messages"]
            count += 1
            turns += len(messages)
            prompt_chars.append(
                sum(len(m["content"]) for m in messages if m["role"] != "assistant")
            )
            answer_chars.append(
                sum(len(m["content"]) for m in messages if m["role"] == "assistant")
            )

    def summary(values: list[int]) -> dict[str, float]:
        if not values:
            return {"min": 0, "mean": 0, "max": 0}
        return {"min": min(values), "mean": round(sum(values) / len(values), 1), "max": max(values)}

    return {
        "records": count,
        "mean_turns": round(turns / count, 2) if count else 0,
        "prompt_chars": summary(prompt_chars),
        "answer_chars": summary(answer_chars),
    }


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


def latest_version(dataset: Dataset) -> DatasetVersion:
    if not dataset.versions:
        raise NotFound("dataset has no versions")
    return dataset.versions[-1]


def records_file(settings: Settings, version: DatasetVersion) -> Path:
    return settings.data_dir / version.records_path
