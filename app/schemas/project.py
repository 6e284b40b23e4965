from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.common import Input


class ProjectCreate(Input):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    task_description: str = Field(default="", max_length=20_000)
    domain: str = Field(default="", max_length=200)
    system_prompt: str = Field(default="", max_length=20_000)
    success_criteria: list[str] = Field(default_factory=list, max_length=50)
    examples: list[dict[str, Any]] = Field(default_factory=list, max_length=50)


class ProjectRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    task_description: str
    domain: str
    system_prompt: str
    success_criteria: list[str]
    examples: list[dict[str, Any]]
    priority: int = Field(
        default=0, description="its waiting jobs are claimed before those of lower priority"
    )
    created_at: datetime
    updated_at: datetime


class ProjectUpdate(Input):
    """What an admin changes on a project (PATCH /projects/{id})."""

    model_config = ConfigDict(extra="forbid")

    priority: int = Field(
        ge=-100,
        le=100,
        description="higher first; among equal priorities, projects take turns",
    )


class GuideStepRead(BaseModel):
    """One step of a project's guided path."""

    key: str  # goal, data, model, train, check, use
    title: str
    explanation: str
    done: bool
    current: bool
    href: str
