from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, Timestamped, UTCDateTime, UUIDPrimaryKey
from app.models.lease import Leased

# Append-only tables that grow by thousands of rows per job use integer keys: cheaper to index
# and naturally ordered. SQLite only auto-increments a column declared exactly INTEGER.
SerialKey = BigInteger().with_variant(Integer(), "sqlite")


class JobStatus(enum.StrEnum):
    """The OpenAI fine-tuning API's statuses."""

    validating_files = "validating_files"
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


class Job(UUIDPrimaryKey, Timestamped, Leased, Base):
    """A training run. This row, not the broker, is the source of truth for the job's state."""

    __tablename__ = "jobs"

    project_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    dataset_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("datasets.id"), index=True)
    # Pinned at creation: new uploads to the dataset never change what a job trains on.
    dataset_version_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("dataset_versions.id"))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(32), default=JobStatus.validating_files, index=True)
    current_step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int | None] = mapped_column(Integer)
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Queue an evaluation (prompting baseline vs this model on the test split) when it succeeds.
    evaluate_after: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )


class JobEvent(Base):
    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(SerialKey, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    level: Mapped[str] = mapped_column(String(16), default="info")
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class MetricPoint(Base):
    __tablename__ = "metric_points"
    # A step's value is written once: a resumed or re-delivered job cannot duplicate points.
    __table_args__ = (UniqueConstraint("job_id", "name", "step"),)

    id: Mapped[int] = mapped_column(SerialKey, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
