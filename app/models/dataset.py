from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Integer, String, UniqueConstraint
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
    """Immutable and content-addressed: the same bytes uploaded twice are one version."""

    __tablename__ = "dataset_versions"
    __table_args__ = (
        UniqueConstraint("dataset_id", "sha256"),
        UniqueConstraint("dataset_id", "number"),
    )

    dataset_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(32))
    container: Mapped[str] = mapped_column(String(16))
    records: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    # The name the user gave the file: shown, never used as a path.
    original_filename: Mapped[str] = mapped_column(String(255), default="")
    # Relative to the data folder; the normalized JSONL (one {"messages": [...]} per line).
    records_path: Mapped[str] = mapped_column(String(512))
    raw_path: Mapped[str] = mapped_column(String(512))
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    warnings: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Whose storage quota the upload counts against.
    uploaded_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )

    dataset: Mapped[Dataset] = relationship(back_populates="versions")
