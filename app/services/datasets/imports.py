"""Receiving training files and importing them as dataset versions.

A file arrives as an *upload* (`stage_upload`): stored, inspected (container, columns, first
rows, detected format), nothing else. *Importing* it (`import_upload`) validates every record
with the user's choices (format, column mapping, dropping invalid rows, split) and makes a
version; a file that does not validate leaves its full error list on the upload and no dataset
row.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.csv_cells import safe_writer
from app.core.db import utcnow
from app.core.errors import Conflict, FieldError, InvalidDataset, NotFound
from app.core.uploads import ReceivedUpload
from app.datasets import (
    parsing as dataset_parsing,
)
from app.datasets import (
    splits as dataset_splits,
)
from app.datasets import (
    stats as dataset_stats,
)
from app.datasets.splits import SPLITS
from app.models import Dataset, DatasetUpload, DatasetVersion, UploadStatus, User
from app.schemas.dataset import ImportRequest, SplitOptions
from app.services import datasets
from app.services.projects import get_project

LISTED_ERRORS = 200
PROGRESS_EVERY_S = 0.5
STALE_UPLOADS = timedelta(days=7)


# --- receiving -------------------------------------------------------------------------------


def stage_upload(
    session: Session,
    *,
    settings: Settings,
    project_id: uuid.UUID,
    received: ReceivedUpload,
    user: User,
) -> DatasetUpload:
    """Keep a received file (and its validation/test companions) as uploads, inspected."""
    try:
        project = get_project(session, project_id=project_id)
        total = received.size + sum(c.size for c in received.companions.values())
        datasets.check_quota(session, settings=settings, user=user, adding=total)
        main = _stage_one(session, settings, project.id, received, user)
        for role in ("validation", "test"):
            companion = received.companions.get(f"{role}_file")
            if companion is not None:
                row = _stage_one(session, settings, project.id, companion, user)
                main.companions = {**main.companions, role: str(row.id)}
        session.flush()
        return main
    finally:
        received.discard()  # whatever was not moved into the store


def _stage_one(
    session: Session, settings: Settings, project_id: uuid.UUID, part: ReceivedUpload, user: User
) -> DatasetUpload:
    assert part.path is not None
    row = DatasetUpload(
        id=uuid.uuid4(),
        project_id=project_id,
        user_id=user.id,
        filename=part.filename,
        size_bytes=part.size,
        path="",
        status=UploadStatus.staged.value,
        columns=[],
        sample=[],
        errors=[],
        companions={},
    )
    dest = staged_dir(settings) / str(row.id)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part.path.replace(dest)
    part.path = None
    row.path = str(dest.relative_to(settings.data_dir))
    preview = dataset_parsing.inspect_file(dest, filename=part.filename)
    row.container = preview.container
    row.columns = list(preview.columns)
    row.sample = _storable(preview.rows)
    row.detected_format = preview.detected_format
    row.suggested_mapping = preview.suggested_mapping
    row.problem = preview.problem
    if preview.problem:
        # An unreadable file's one error, located, like those validation finds.
        row.errors = [{"line": preview.problem_line, "field": None, "message": preview.problem}]
        row.error_count = 1
    session.add(row)
    return row


def _storable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Shown on a page and stored as JSON: text only, no NUL (Postgres refuses it).
    return [
        {str(k).replace("\x00", ""): str(v).replace("\x00", "") for k, v in row.items()}
        for row in rows
    ]


def staged_dir(settings: Settings) -> Path:
    return settings.uploads_dir / "staged"


def upload_file(settings: Settings, upload: DatasetUpload) -> Path:
    return settings.data_dir / upload.path


def errors_file(settings: Settings, upload: DatasetUpload) -> Path | None:
    return settings.data_dir / upload.errors_path if upload.errors_path else None


def discard_upload(session: Session, *, settings: Settings, upload: DatasetUpload) -> None:
    """Delete an upload and its files (and its separate validation/test files, unless one of
    them became part of a version on its own)."""
    companions = [session.get(DatasetUpload, uuid.UUID(i)) for i in upload.companions.values()]
    for row in (upload, *companions):
        if row is None or (row is not upload and row.status == UploadStatus.imported.value):
            continue
        for path in (upload_file(settings, row), errors_file(settings, row)):
            if path is not None:
                path.unlink(missing_ok=True)
        session.delete(row)


def purge_stale_uploads(session: Session, *, settings: Settings) -> int:
    """On server start: delete uploads older than a week, and their files; an upload still
    marked "validating" was cut off when the server stopped and can be imported again."""
    cutoff = utcnow() - STALE_UPLOADS
    rows = session.scalars(select(DatasetUpload).where(DatasetUpload.created_at < cutoff)).all()
    for row in rows:
        discard_upload(session, settings=settings, upload=row)
    session.execute(
        update(DatasetUpload)
        .where(DatasetUpload.status == UploadStatus.validating.value)
        .values(status=UploadStatus.staged.value, progress_bytes=0)
    )
    return len(rows)


# --- importing -------------------------------------------------------------------------------


def import_upload(
    session: Session,
    *,
    settings: Settings,
    upload: DatasetUpload,
    options: ImportRequest,
    user: User,
) -> tuple[Dataset, DatasetVersion]:
    """Validate an upload with the user's choices and make it a dataset version.

    Importing the same file with the same choices again gives the same version. A file with
    errors raises InvalidDataset; its errors stay on the upload (and in a downloadable file)
    and no dataset or version row is written.
    """
    if upload.problem:
        raise InvalidDataset(
            f"{upload.filename or 'the file'} cannot be read: {upload.problem}",
            errors=_problem_errors(upload),
            extra={"upload_id": str(upload.id)},
        )
    if upload.status == UploadStatus.validating.value:
        raise Conflict("this file is being validated already: wait for it to finish")
    dataset = None
    if options.dataset_id is not None:
        dataset = session.get(Dataset, options.dataset_id)
        if dataset is None or dataset.project_id != upload.project_id:
            raise NotFound("dataset not found")
    companions = _companions(session, upload, options)
    if companions and (options.split.validation or options.split.test):
        # Separate files decide the split; ratios would split the training file again.
        options = options.model_copy(update={"split": SplitOptions(validation=0, test=0)})
    format_name = "columns" if options.mapping else options.format

    work = Path(tempfile.mkdtemp(prefix="import-", dir=settings.uploads_dir))
    try:
        reports: dict[str, dataset_parsing.ValidationReport] = {}
        for role, part in (("train", upload), *companions.items()):
            reports[role] = _validate(
                session, settings, part, work / f"{role}.jsonl", format_name, options
            )
        report = reports["train"]
        digest = datasets.version_digest(
            {
                "raw": report.sha256,
                "format": report.format,
                "mapping": report.mapping,
                "drop_invalid": options.drop_invalid,
                "split": options.split.model_dump(),
                "files": {role: reports[role].sha256 for role in companions},
            }
        )
        if dataset is not None:
            existing = datasets.version_by_digest(session, dataset, digest)
            if existing is not None:
                _mark_imported(session, upload, companions, existing)
                return dataset, existing

        version_dir = datasets.version_dir(settings, digest)
        split: dict[str, Any]
        if companions:
            counts = _place_files(work, version_dir, reports)
            split = {"method": "files", "counts": counts}
        else:
            planned = dataset_splits.split_records(
                [work / "train.jsonl"],
                version_dir,
                validation=options.split.validation,
                test=options.split.test,
                seed=options.split.seed,
            )
            split = {
                "method": "ratio",
                "seed": options.split.seed,
                "ratios": {"validation": options.split.validation, "test": options.split.test},
                "counts": planned.as_dict(),
            }
        stats = dataset_stats.compute_stats_of([version_dir / f"{s}.jsonl" for s in SPLITS])
        raw_path = _keep_raw(settings, upload_file(settings, upload), report.sha256)

        if dataset is None:
            dataset = Dataset(
                project_id=upload.project_id,
                name=(options.name or upload.filename or "dataset")[:255],
            )
            session.add(dataset)
            session.flush()
        version = datasets.add_version(
            session,
            dataset,
            digest=digest,
            sha256=report.sha256,
            format=report.format or "unknown",
            container=report.container or "unknown",
            records=sum(split["counts"].values()),
            size_bytes=upload.size_bytes,
            original_filename=upload.filename,
            raw_path=str(raw_path.relative_to(settings.data_dir)),
            records_path=str((version_dir / "train.jsonl").relative_to(settings.data_dir)),
            stats=stats,
            warnings=[w for r in reports.values() for w in r.warnings],
            split=split,
            lineage={
                "operation": "upload",
                "options": {
                    "format": report.format,
                    "mapping": report.mapping,
                    "drop_invalid": options.drop_invalid,
                    "files": {role: companions[role].filename for role in companions},
                },
                "removed": {"invalid": sum(r.dropped for r in reports.values())},
            },
            dropped_invalid=sum(r.dropped for r in reports.values()),
            uploaded_by_id=user.id,
        )
        _mark_imported(session, upload, companions, version)
        return dataset, version
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _companions(
    session: Session, upload: DatasetUpload, options: ImportRequest
) -> dict[str, DatasetUpload]:
    found: dict[str, DatasetUpload] = {}
    ids = {
        "validation": options.validation_upload_id or upload.companions.get("validation"),
        "test": options.test_upload_id or upload.companions.get("test"),
    }
    for role, raw_id in ids.items():
        if raw_id is None:
            continue
        row = session.get(DatasetUpload, uuid.UUID(str(raw_id)))
        if row is None or row.project_id != upload.project_id or row.id == upload.id:
            raise NotFound(f"{role} upload not found")
        found[role] = row
    return found


def _validate(
    session: Session,
    settings: Settings,
    upload: DatasetUpload,
    dest: Path,
    format_name: str | None,
    options: ImportRequest,
) -> dataset_parsing.ValidationReport:
    errors_path = staged_dir(settings) / f"{upload.id}.errors.csv"
    progress = _ProgressWriter(session, upload.id)
    progress.set(status=UploadStatus.validating.value, progress_bytes=0)
    try:
        report = dataset_parsing.validate_file(
            upload_file(settings, upload),
            dest=dest,
            format=format_name,
            mapping={str(k): v for k, v in options.mapping.items()} if options.mapping else None,
            filename=upload.filename,
            drop_invalid=options.drop_invalid,
            max_errors=LISTED_ERRORS,
            errors_file=errors_path,
            progress=progress,
        )
    except BaseException:
        progress.set(status=UploadStatus.staged.value)
        raise
    has_errors = report.error_count > 0
    if not has_errors:
        errors_path.unlink(missing_ok=True)
    listed = [{"line": e.line, "field": e.field, "message": e.message} for e in report.errors]
    if not report.ok and not listed:
        listed = [{"line": None, "field": None, "message": "the file holds no records"}]
    progress.set(
        status=UploadStatus.staged.value if report.ok else UploadStatus.invalid.value,
        progress_bytes=upload.size_bytes,
        error_count=max(report.error_count, len(listed) if not report.ok else 0),
        errors=listed,
        errors_path=str(errors_path.relative_to(settings.data_dir)) if has_errors else None,
        valid_records=report.records,
    )
    session.refresh(upload)
    if not report.ok:
        raise _invalid(report, upload)
    return report


class _ProgressWriter:
    """Writes an upload's progress in its own short transactions, so a page polling the upload
    sees it while the import's own transaction is still open."""

    def __init__(self, session: Session, upload_id: uuid.UUID) -> None:
        self.bind = session.get_bind()
        self.upload_id = upload_id
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY_S or done >= total:
            self.last = now
            self.set(progress_bytes=done)

    def set(self, **values: Any) -> None:
        with Session(self.bind) as side, side.begin():
            side.execute(
                update(DatasetUpload).where(DatasetUpload.id == self.upload_id).values(**values)
            )


def _invalid(report: dataset_parsing.ValidationReport, upload: DatasetUpload) -> InvalidDataset:
    errors = [FieldError(message=e.message, field=e.field, line=e.line) for e in report.errors]
    name = upload.filename or "the file"
    if report.error_count:
        first = report.errors[0]
        where = f"line {first.line}: " if first.line else ""
        more = f" ({report.error_count:,} errors in all)" if report.error_count > 1 else ""
        message = f"{name} is not valid: {where}{first.message}{more}"
        if report.records:
            message += (
                f". {report.records:,} record{'s' if report.records != 1 else ''} are valid: "
                "fix the file, or import again choosing to drop the invalid rows"
            )
    else:
        message = f"{name} has no records to train on"
        errors = [FieldError(message="the file holds no records")]
    return InvalidDataset(
        message,
        errors=errors,
        error_count=max(report.error_count, len(errors)),
        extra={"upload_id": str(upload.id), "valid_records": report.records},
    )


def _mark_imported(
    session: Session,
    upload: DatasetUpload,
    companions: dict[str, DatasetUpload],
    version: DatasetVersion,
) -> None:
    for row in (upload, *companions.values()):
        row.status = UploadStatus.imported.value
        row.version_id = version.id


def _place_files(
    work: Path, version_dir: Path, reports: dict[str, dataset_parsing.ValidationReport]
) -> dict[str, int]:
    version_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name in SPLITS:
        src = work / f"{name}.jsonl"
        if not src.exists():
            src.write_bytes(b"")
        os.replace(src, version_dir / f"{name}.jsonl")
        counts[name] = reports[name].records if name in reports else 0
    return counts


def _keep_raw(settings: Settings, src: Path, sha: str) -> Path:
    """The uploaded bytes, stored once by their hash (hard-linked, so the upload can still be
    imported again with other choices until it is purged)."""
    dest = settings.datasets_dir / "raw" / sha[:2] / sha
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{sha}.{uuid.uuid4().hex}.part")
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    return dest


def create_dataset_from_upload(
    session: Session,
    *,
    settings: Settings,
    project_id: uuid.UUID,
    upload: ReceivedUpload,
    user: User,
    options: ImportRequest | None = None,
) -> tuple[Dataset, DatasetVersion]:
    """Receive and import in one step (the API's one-shot upload and the CLI).

    The upload row is committed before validation so that, when the file has errors, the
    full error list stays downloadable and a retry (e.g. dropping invalid rows) needs no new
    upload; no dataset row is written for a bad file.
    """
    options = options or ImportRequest()
    if options.dataset_id is not None:
        dataset = session.get(Dataset, options.dataset_id)
        if dataset is None or dataset.project_id != project_id:
            upload.discard()
            raise NotFound("dataset not found")
    staged = stage_upload(
        session, settings=settings, project_id=project_id, received=upload, user=user
    )
    if staged.problem:
        # Unreadable as any container: no choice on a retry could help, so nothing is kept.
        exc = InvalidDataset(
            f"{staged.filename or 'the file'} cannot be read: {staged.problem}",
            errors=_problem_errors(staged),
        )
        discard_upload(session, settings=settings, upload=staged)
        session.commit()
        raise exc
    session.commit()
    return import_upload(session, settings=settings, upload=staged, options=options, user=user)


def _problem_errors(upload: DatasetUpload) -> list[FieldError]:
    return [
        FieldError(message=e["message"], field=e.get("field"), line=e.get("line"))
        for e in upload.errors
    ] or [FieldError(message=upload.problem or "the file cannot be read", line=1)]


def write_errors_csv(upload: DatasetUpload, dest: Path) -> None:
    """The listed errors as CSV, for an upload whose full error file is gone."""
    with dest.open("w", encoding="utf-8-sig", newline="") as f:
        writer = safe_writer(f)
        writer.writerow(["line", "field", "message"])
        for e in upload.errors:
            writer.writerow([e.get("line") or "", e.get("field") or "", e.get("message", "")])
