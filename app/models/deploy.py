from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, Timestamped, UUIDPrimaryKey
from app.models.lease import Leased


class Export(UUIDPrimaryKey, Timestamped, Leased, Base):
    """A job's model packaged for an inference engine: the adapter alone, or merged."""

    __tablename__ = "exports"

    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # adapter | merged
    dtype: Mapped[str] = mapped_column(String(16), default="auto")
    # queued → running → succeeded | failed
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    path: Mapped[str | None] = mapped_column(String(512))  # the folder, under the data dir
    archive_path: Mapped[str | None] = mapped_column(String(512))  # its .tar
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    files: Mapped[list[str]] = mapped_column(JSON, default=list)
    verification: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    note: Mapped[str | None] = mapped_column(Text)
    seconds: Mapped[float | None] = mapped_column()
    # While a worker builds it: {"phase": "checkpoint" | "packing" | "merging", ...}.
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default="{}")
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )


class Deployment(UUIDPrimaryKey, Timestamped, Leased, Base):
    """A base model and adapters served by a worker behind tunelab's OpenAI-compatible API."""

    __tablename__ = "deployments"

    project_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(64), unique=True)
    base_model: Mapped[str] = mapped_column(String(500))
    # [{"name": "job-1a2b3c4d", "job_id": "...", "path": "artifacts/..."}]
    adapters: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # starting → running → stopping → stopped | failed
    status: Mapped[str] = mapped_column(String(16), default="starting", index=True)
    url: Mapped[str | None] = mapped_column(String(255))  # where the worker serves it
    api_key: Mapped[str] = mapped_column(String(128))  # what tunelab sends to that server
    # While the model loads: {"phase": "loading" | "starting server"}.
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default="{}")
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
