"""What OpenAI's fine-tuning API keeps beside tunelab's own rows: its files, and each job's
OpenAI-side fields. A file is also a tunelab upload, a job also a tunelab job."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Integer, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, Timestamped, UTCDateTime, UUIDPrimaryKey


class OpenAIFile(UUIDPrimaryKey, Timestamped, Base):
    """A file sent to ``POST /v1/files``: the bytes as sent (``path``), the same records in
    tunelab's chat form (``converted_path``), and the upload that shows it on the data page."""

    __tablename__ = "openai_files"

    user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    project_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    upload_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("dataset_uploads.id", ondelete="SET NULL")
    )
    filename: Mapped[str] = mapped_column(String(255), default="")
    purpose: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))  # chat | preference
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    records: Mapped[int] = mapped_column(Integer, default=0)
    path: Mapped[str] = mapped_column(String(512))  # relative to the data folder
    converted_path: Mapped[str] = mapped_column(String(512))
    # What the file holds that tunelab trains differently: ["weight", "tools", ...].
    features: Mapped[list[str]] = mapped_column(JSON, default=list)


class OpenAIJob(Base):
    """The OpenAI-side fields of a tunelab job made through ``/v1/fine_tuning/jobs``."""

    __tablename__ = "openai_jobs"

    job_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    model: Mapped[str] = mapped_column(String(500))  # as the client named it
    suffix: Mapped[str | None] = mapped_column(String(64))
    # ft:<base>:<owner>:<suffix>:<id>, fixed at creation, answered once the job succeeded.
    fine_tuned_model: Mapped[str] = mapped_column(String(800), unique=True)
    owner: Mapped[str] = mapped_column(String(64))
    # The files' ids, kept when a file is deleted (the job's data is its dataset version).
    training_file_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    validation_file_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # tunelab's own addition: held-out questions with reference answers, the evaluation's data.
    test_file_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # The request's own values ("auto" or a number), as OpenAI's job object shows them.
    method: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    request_metadata: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # What the request asked for that tunelab has no equivalent of, one sentence each.
    notes: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Set by pause, cleared by resume: a paused job is a cancelled tunelab job that keeps its
    # checkpoints and can be queued again from the newest one.
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class OpenAIProject(Base):
    """Each user's default project for API jobs that name none (``metadata.project``)."""

    __tablename__ = "openai_projects"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
