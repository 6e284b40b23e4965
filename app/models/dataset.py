from __future__ import annotations

import enum
import uuid
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.core.db import Base, Timestamped, UUIDPrimaryKey


class Dataset(UUIDPrimaryKey, Timestamped, Base):
    """A named collection of training data in a project; its content lives in versions."""

    __tablename__ = "datasets"

    project_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(255))

    versions: Mapped[list[DatasetVersion]] = relationship(
        back_populates="dataset", order_by="DatasetVersion.number", lazy="selectin"
    )


class DatasetVersion(UUIDPrimaryKey, Timestamped, Base):
    """Immutable and content-addressed: the same file with the same choices is one version.

    ``digest`` identifies the content: the raw file's hash plus every choice that shaped the
    records (format, mapping, dropped rows, split) or, for a cleaned version, its parent's
    digest plus the cleaning steps. The split is part of the version, so a job that points at
    a version always trains on the same records.
    """

    __tablename__ = "dataset_versions"
    __table_args__ = (
        UniqueConstraint("dataset_id", "digest"),
        UniqueConstraint("dataset_id", "number"),
    )

    dataset_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(64))
    # Of the raw file the records came from (of the first upload, for a cleaned version).
    sha256: Mapped[str] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(32))
    container: Mapped[str] = mapped_column(String(16))
    records: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    # The name the user gave the file: shown, never used as a path.
    original_filename: Mapped[str] = mapped_column(String(255), default="")
    # Relative to the data folder: the training split, normalized JSONL (one
    # {"messages": [...], "line": N} per line). The other splits sit beside it (`split`).
    records_path: Mapped[str] = mapped_column(String(512))
    raw_path: Mapped[str] = mapped_column(String(512))
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    warnings: Mapped[list[str]] = mapped_column(JSON, default=list)
    # {"method": "ratio"|"files"|"none", "seed", "ratios", "counts": {"train", ...},
    #  "files": {"train": path, "validation": path, "test": path}}
    split: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # How the records were made: {"operation": "upload"|"clean"|"split", "options": {...},
    #  "removed": {...}, "parent": number}; `parent_id` links a cleaned version to its source.
    lineage: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("dataset_versions.id", ondelete="SET NULL"), index=True
    )
    dropped_invalid: Mapped[int] = mapped_column(Integer, default=0)
    # Token statistics per tokenizer, computed on request and kept: {"qwen3@2048": {...}}.
    token_stats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Whose storage quota the upload counts against.
    uploaded_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )

    dataset: Mapped[Dataset] = relationship(back_populates="versions")


class UploadStatus(enum.StrEnum):
    staged = "staged"  # received; waiting for the user's choices (format, mapping, split)
    validating = "validating"
    imported = "imported"  # became a dataset version (`version_id`)
    invalid = "invalid"  # validation found errors; the file stays for a retry or download


class DatasetUpload(UUIDPrimaryKey, Timestamped, Base):
    """A received file before it is a dataset: the column-mapping step, validation progress,
    and the full error list of a file that did not validate live here, never in datasets."""

    __tablename__ = "dataset_uploads"

    project_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    filename: Mapped[str] = mapped_column(String(255), default="")
    path: Mapped[str] = mapped_column(String(512))  # relative to the data folder
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default=UploadStatus.staged.value)
    container: Mapped[str | None] = mapped_column(String(16))
    columns: Mapped[list[str]] = mapped_column(JSON, default=list)
    sample: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    detected_format: Mapped[str | None] = mapped_column(String(32))
    suggested_mapping: Mapped[dict[str, str] | None] = mapped_column(JSON)
    problem: Mapped[str | None] = mapped_column(Text)
    progress_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    error_count: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    errors_path: Mapped[str | None] = mapped_column(String(512))
    valid_records: Mapped[int] = mapped_column(Integer, default=0)
    # Optional separate validation and test files: {"validation": upload id, "test": upload id}.
    companions: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    version_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("dataset_versions.id", ondelete="SET NULL")
    )
