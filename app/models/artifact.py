from __future__ import annotations

import uuid

from sqlalchemy import JSON, BigInteger, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, Timestamped, UUIDPrimaryKey


class Artifact(UUIDPrimaryKey, Timestamped, Base):
    """A file tree a job produced (e.g. a LoRA adapter), stored under the artifacts folder."""

    __tablename__ = "artifacts"

    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    # Relative to the data folder.
    path: Mapped[str] = mapped_column(String(512))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    files: Mapped[list[str]] = mapped_column(JSON, default=list)
