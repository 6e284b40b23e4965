from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.common import Input

Criterion = Field(min_length=1, max_length=40, pattern=r"^[^\s].*$")


class CampaignCreate(Input):
    """A review campaign from an evaluation: its items are the evaluation's examples (and any
    prompts typed here, which both models answer on a worker)."""

    model_config = ConfigDict(extra="forbid")

    project_id: uuid.UUID
    evaluation_id: uuid.UUID
    name: str = Field(min_length=1, max_length=200)
    instructions: str = Field("", max_length=5000)
    mode: Literal["pairwise", "rating", "both"] = "both"
    criteria: list[str] = Field(
        default_factory=lambda: ["accuracy", "style", "format"], max_length=8
    )
    model_a: str | None = Field(None, description="candidate key; default: the baseline")
    model_b: str | None = Field(
        None, description="candidate key; default: the fine-tuned model; omit for rating-only"
    )
    reviewers_per_item: int = Field(1, ge=1, le=20)
    max_items: int | None = Field(None, ge=1, le=5000, description="default: every example")
    prompts: list[str] = Field(default_factory=list, max_length=200)
    reviewers: list[str] = Field(default_factory=list, max_length=200, description="e-mails")
    open: bool = Field(True, description="open for reviewing at once (needs reviewers)")
    seed: int = Field(0, ge=0, le=2**31 - 1)


class ReviewerAdd(Input):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(min_length=3, max_length=320)


class PromptsAdd(Input):
    model_config = ConfigDict(extra="forbid")

    prompts: list[str] = Field(min_length=1, max_length=200)


class CampaignRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    project_id: uuid.UUID
    evaluation_id: uuid.UUID | None
    name: str
    instructions: str
    mode: str
    criteria: list[str]
    reviewers_per_item: int
    model_a: dict[str, Any]
    model_b: dict[str, Any] | None
    status: str
    created_at: datetime
    opened_at: datetime | None
    closed_at: datetime | None
    items: int = 0
    items_answering: int = 0
    reviewers: list[dict[str, Any]] = Field(default_factory=list)
    ratings: int = 0
    assignments: int = 0


class RatingIn(Input):
    """A reviewer's grade, in the terms they saw: the left and the right answer."""

    model_config = ConfigDict(extra="forbid")

    choice: Literal["left", "right", "tie", "both_bad"] | None = None
    scores: dict[Literal["left", "right"], dict[str, int]] = Field(default_factory=dict)
    comment: str = Field("", max_length=5000)


class ReviewerItem(BaseModel):
    """What a reviewer sees of one item: no model names, answers as left and right."""

    campaign_id: uuid.UUID
    campaign_name: str
    instructions: str
    mode: str
    criteria: list[str]
    sequence: int
    total: int
    rated: int
    prompt: str
    messages: list[dict[str, Any]]
    reference: str | None
    left: str
    right: str | None
    choice: str | None = None
    scores: dict[str, dict[str, int]] = Field(default_factory=dict)
    comment: str = ""
    revision: int = 0
    status: str


class ReviewerCampaign(BaseModel):
    id: uuid.UUID
    name: str
    status: str
    total: int
    rated: int
    next_sequence: int | None
