from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.common import Input


class JobCreate(Input):
    model_config = ConfigDict(extra="forbid")

    project_id: uuid.UUID
    dataset_id: uuid.UUID
    dataset_version: int | None = Field(
        None, ge=1, le=2**31 - 1, description="version number; the newest when left out"
    )
    evaluate: bool = Field(
        True,
        description="when the job succeeds, evaluate it against its prompting baseline on the "
        "dataset version's test split",
    )
    # Validated against worker.spec.config.TrainConfig by the jobs service, so that the
    # error names the field inside `config` the way the form and the YAML file name it.
    config: dict[str, Any] = Field(
        examples=[{"base_model": "smollm2-135m-instruct", "method": "lora", "max_steps": 30}]
    )


class JobRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    project_id: uuid.UUID
    dataset_id: uuid.UUID
    dataset_version_id: uuid.UUID
    config: dict[str, Any]
    status: str
    queue: str
    attempts: int
    worker: str | None
    created_at: datetime
    queued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    cancel_requested_at: datetime | None
    error: str | None
    current_step: int
    total_steps: int | None
    evaluate_after: bool = True
    progress: float = Field(default=0.0, description="0..1, steps done over total steps")
    # Live progress while the job runs, from its latest step's metrics; null otherwise.
    epoch: float | None = Field(default=None, description="epochs done, fractional")
    tokens_per_second: float | None = None
    eta_seconds: float | None = Field(
        default=None, description="estimated seconds left, from the mean time per step so far"
    )
    gpu_memory_bytes: int | None = Field(
        default=None, description="peak GPU memory allocated by the training process so far"
    )
    result: dict[str, Any]
    checkpoint: str | None = Field(
        default=None,
        description="a cancelled or failed job's newest checkpoint: it can be resumed "
        "(POST /jobs/{id}/resume) or exported (POST /jobs/{id}/exports)",
    )
    jobs_ahead: int | None = Field(
        default=None, description="a queued job: how many jobs of its queue wait or run ahead"
    )
    waiting_reason: str | None = Field(
        default=None,
        description="a queued job that no online worker can run: why, in the reader's language",
    )


class JobEventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    created_at: datetime
    level: str
    message: str
    data: dict[str, Any] | None


class MetricPointRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    step: int
    name: str
    value: float
    created_at: datetime


class ArtifactRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    job_id: uuid.UUID
    kind: str
    size_bytes: int
    files: list[str]
    created_at: datetime
