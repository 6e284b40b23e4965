from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, Timestamped, UUIDPrimaryKey
from app.models.job import JobStatus, SerialKey
from app.models.lease import Leased

# Evaluations move through the same states as jobs (queued → running → succeeded | failed |
# cancelled), claimed and heart-beaten the same way.
EvalStatus = JobStatus


class Evaluation(UUIDPrimaryKey, Timestamped, Leased, Base):
    """Several models answering the same held-out prompts with the same decoding settings."""

    __tablename__ = "evaluations"

    project_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    # The test data: a dataset version and which part of it ("test" split or "all" records).
    dataset_version_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("dataset_versions.id"))
    split: Mapped[str] = mapped_column(String(16), default="test")
    # The training job this evaluation follows, when it was started by one (or for one).
    job_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), index=True
    )
    # [{"key", "label", "kind": base|job|checkpoint, "base_model", "job_id", "checkpoint",
    #   "k_shot", "system_prompt"}]: the models compared, baseline first.
    candidates: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # Decoding settings, sample limit, seed: identical for every candidate, kept with results.
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(32), default=EvalStatus.queued, index=True)
    # {"phase", "model", "done", "total"} while running.
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Metrics with intervals per candidate and paired differences against the baseline.
    results: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )


class EvalSample(Base):
    """One test example: its prompt, reference, every model's answer and scores."""

    __tablename__ = "eval_samples"
    __table_args__ = (UniqueConstraint("evaluation_id", "position"),)

    id: Mapped[int] = mapped_column(SerialKey, primary_key=True, autoincrement=True)
    evaluation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("evaluations.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)
    messages: Mapped[list[dict[str, Any]]] = mapped_column(JSON)  # the conversation asked
    prompt: Mapped[str] = mapped_column(Text)  # its last user turn, for display
    reference: Mapped[str] = mapped_column(Text)
    outputs: Mapped[dict[str, str]] = mapped_column(JSON)  # candidate key -> answer
    scores: Mapped[dict[str, dict[str, float]]] = mapped_column(JSON)  # key -> metric -> value
    # Subject minus baseline on the primary metric: sorting by it puts "fine-tuned worse than
    # baseline" first. Null without a baseline.
    delta: Mapped[float | None] = mapped_column(Float, index=True)
    # Lower-cased prompt, reference and answers, so one LIKE searches them on both databases
    # (JSON columns escape non-ASCII text on the way in, which would hide Chinese).
    search_text: Mapped[str] = mapped_column(Text, default="")
