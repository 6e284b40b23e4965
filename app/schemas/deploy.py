from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.common import Input


class ExportCreate(Input):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["adapter", "merged"] = Field(
        description="adapter: PEFT format, for vLLM's LoRA support; merged: a standalone model"
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="weights of a merged export; auto: bf16 on a GPU, float32 on CPU"
    )


class ExportRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    job_id: uuid.UUID
    kind: str
    dtype: str
    status: str
    size_bytes: int
    files: list[str]
    verification: dict[str, Any] | None
    note: str | None
    error: str | None
    seconds: float | None
    created_at: datetime
    finished_at: datetime | None
    progress: dict[str, Any] = Field(
        default_factory=dict,
        description="while a worker builds it: phase (checkpoint, packing, merging) and, for a "
        "stopped job's export, the checkpoint it is made from",
    )
    waiting_reason: str | None = Field(
        default=None,
        description="a queued export that no online worker can make: why, in the reader's language",
    )


class DeploymentCreate(Input):
    model_config = ConfigDict(extra="forbid")

    project_id: uuid.UUID
    name: str = Field(
        min_length=1,
        max_length=48,
        pattern=r"^[a-z0-9][a-z0-9-]*$",
        description="lower-case letters, digits and dashes; model names start with it",
    )
    job_ids: list[uuid.UUID] = Field(
        min_length=1, max_length=8, description="succeeded jobs of one base model"
    )


class DeploymentRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    project_id: uuid.UUID
    name: str
    base_model: str
    adapters: list[dict[str, Any]]
    status: str
    error: str | None
    progress: dict[str, Any] = Field(
        default_factory=dict, description="while starting: phase (loading, starting server)"
    )
    created_at: datetime
    heartbeat_at: datetime | None
    stopped_at: datetime | None = Field(validation_alias="finished_at")
    models: list[str] = Field(default_factory=list, description="names to send as `model`")
