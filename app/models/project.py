from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, Timestamped, UTCDateTime, UUIDPrimaryKey, utcnow


class Project(UUIDPrimaryKey, Timestamped, Base):
    """The goal: what the specialist model is for and how success is measured."""

    __tablename__ = "projects"

    name: Mapped[str] = mapped_column(String(200))
    task_description: Mapped[str] = mapped_column(Text, default="")
    domain: Mapped[str] = mapped_column(String(200), default="")
    system_prompt: Mapped[str] = mapped_column(Text, default="")
    # e.g. ["rougeL >= 0.40", "human win rate >= 60%"]; parsed and checked by the evaluation step.
    success_criteria: Mapped[list[str]] = mapped_column(JSON, default=list)
    # [{"input": ..., "output": ...}] written by the domain expert to illustrate the task.
    examples: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # Its jobs are claimed before those of projects of lower priority; among equal ones, the
    # project served least recently goes first (app.services.leases.claim_next).
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
