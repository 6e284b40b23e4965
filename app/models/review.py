from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, Timestamped, UTCDateTime, UUIDPrimaryKey, utcnow
from app.models.job import SerialKey
from app.models.lease import Leased


class CampaignStatus(enum.StrEnum):
    draft = "draft"  # items and reviewers being set up; nobody reviews yet
    open = "open"  # reviewers grade their assignments
    closed = "closed"  # results final; which model wrote which answer is revealed


class ItemStatus(enum.StrEnum):
    ready = "ready"
    answering = "answering"  # a typed prompt whose answers a worker is generating
    failed = "failed"


class ReviewCampaign(UUIDPrimaryKey, Timestamped, Base):
    """Blind grading of two models' answers (or one model's) by people."""

    __tablename__ = "review_campaigns"

    project_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    evaluation_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("evaluations.id", ondelete="SET NULL"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    instructions: Mapped[str] = mapped_column(Text, default="")
    # "pairwise" (which answer is better), "rating" (1–5 per rubric criterion) or "both".
    mode: Mapped[str] = mapped_column(String(16), default="both")
    criteria: Mapped[list[str]] = mapped_column(JSON, default=list)
    reviewers_per_item: Mapped[int] = mapped_column(Integer, default=1)
    # The two models compared: candidate dicts of the evaluation ({"key", "label", ...});
    # model_b is null for a ratings-only campaign of one model.
    model_a: Mapped[dict[str, Any]] = mapped_column(JSON)
    model_b: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=CampaignStatus.draft, index=True)
    seed: Mapped[int] = mapped_column(Integer, default=0)
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )


class CampaignReviewer(Base):
    __tablename__ = "campaign_reviewers"
    __table_args__ = (UniqueConstraint("campaign_id", "user_id"),)

    id: Mapped[int] = mapped_column(SerialKey, primary_key=True, autoincrement=True)
    campaign_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("review_campaigns.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    added_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ReviewItem(Base):
    """One prompt with model A's and model B's answers."""

    __tablename__ = "review_items"
    __table_args__ = (UniqueConstraint("campaign_id", "position"),)

    id: Mapped[int] = mapped_column(SerialKey, primary_key=True, autoincrement=True)
    campaign_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("review_campaigns.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(16), default="evaluation")  # or "typed"
    eval_sample_position: Mapped[int | None] = mapped_column(Integer)
    messages: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    prompt: Mapped[str] = mapped_column(Text)
    reference: Mapped[str | None] = mapped_column(Text)
    answer_a: Mapped[str] = mapped_column(Text, default="")
    answer_b: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=ItemStatus.ready)
    error: Mapped[str | None] = mapped_column(Text)


class ReviewAssignment(Base):
    """An item in one reviewer's queue: its place there and which side model A is shown on."""

    __tablename__ = "review_assignments"
    __table_args__ = (
        UniqueConstraint("campaign_id", "reviewer_id", "item_id"),
        UniqueConstraint("campaign_id", "reviewer_id", "sequence"),
    )

    id: Mapped[int] = mapped_column(SerialKey, primary_key=True, autoincrement=True)
    campaign_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("review_campaigns.id", ondelete="CASCADE"), index=True
    )
    reviewer_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    item_id: Mapped[int] = mapped_column(ForeignKey("review_items.id", ondelete="CASCADE"))
    sequence: Mapped[int] = mapped_column(Integer)  # 1-based place in this reviewer's queue
    # True: model A's answer is on the right for this reviewer (random per item and reviewer).
    swapped: Mapped[bool] = mapped_column(Boolean, default=False)


class Rating(Base):
    """A reviewer's grade of one assignment, stored de-blinded (in terms of models A and B).

    One row per assignment (a unique constraint): a double submit, a retried request or a
    second tab updates the same row instead of adding one.
    """

    __tablename__ = "ratings"
    __table_args__ = (UniqueConstraint("assignment_id"),)

    id: Mapped[int] = mapped_column(SerialKey, primary_key=True, autoincrement=True)
    assignment_id: Mapped[int] = mapped_column(
        ForeignKey("review_assignments.id", ondelete="CASCADE")
    )
    campaign_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("review_campaigns.id", ondelete="CASCADE"), index=True
    )
    item_id: Mapped[int] = mapped_column(ForeignKey("review_items.id", ondelete="CASCADE"))
    reviewer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    choice: Mapped[str | None] = mapped_column(String(16))  # a | b | tie | both_bad
    scores: Mapped[dict[str, dict[str, int]]] = mapped_column(
        JSON, default=dict
    )  # a/b -> c -> 1..5
    comment: Mapped[str] = mapped_column(Text, default="")
    revision: Mapped[int] = mapped_column(Integer, default=1)  # bumped by every save
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ReviewAnswerRun(UUIDPrimaryKey, Timestamped, Leased, Base):
    """A worker's turn at answering a campaign's typed prompts with both of its models: the
    lease of that work, so a lost worker's prompts are answered again or marked failed."""

    __tablename__ = "review_answer_runs"

    campaign_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("review_campaigns.id", ondelete="CASCADE"), index=True
    )
    # queued → running → succeeded | failed
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
