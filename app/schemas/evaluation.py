from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.common import Input

MAX_CANDIDATES = 6


class DecodingIn(Input):
    """Decoding settings, shared by every model of the evaluation (greedy by default)."""

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int | None = Field(
        None, ge=1, le=8192, description="null: room for the longest typical reference answer"
    )
    temperature: float = Field(0.0, ge=0.0, le=5.0, description="0 means greedy")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0, le=5.0)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    stop: list[str] = Field(default_factory=list, max_length=8)


class CandidateIn(Input):
    """One model to evaluate."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["base", "job", "checkpoint"] = Field(
        description="base: a base model with a prompt; job: a finished job's model; "
        "checkpoint: one of a job's saved checkpoints"
    )
    base_model: str | None = Field(
        None,
        max_length=500,
        description="for kind=base: catalog name, hub id (owner/name), or a model folder or "
        ".gguf file inside a folder the admin allowed (TUNELAB_MODEL_DIRS)",
    )
    job_id: uuid.UUID | None = None
    checkpoint: str | None = Field(
        None, max_length=100, description="for kind=checkpoint: e.g. checkpoint-30"
    )
    k_shot: int = Field(0, ge=0, le=16, description="examples from the training split")
    system_prompt: str | None = Field(
        None, max_length=20_000, description="null: the project's system prompt"
    )
    label: str | None = Field(None, max_length=200)


class EvaluationCreate(Input):
    """Evaluate models on held-out data. The shortest form names a finished job: it is
    compared with its base model prompted with the project's system prompt."""

    model_config = ConfigDict(extra="forbid")

    project_id: uuid.UUID
    job_id: uuid.UUID | None = Field(
        None, description="a finished job to evaluate against its prompting baseline"
    )
    models: list[CandidateIn] = Field(default_factory=list, max_length=MAX_CANDIDATES)
    baseline: bool = Field(
        True, description="add the prompting baseline (the base model with the system prompt)"
    )
    baseline_k_shot: int = Field(0, ge=0, le=16)
    dataset_id: uuid.UUID | None = Field(
        None, description="test data; by default the job's dataset version"
    )
    dataset_version: int | None = Field(None, ge=1, le=2**31 - 1)
    split: Literal["test", "validation", "train", "all"] = "test"
    max_samples: int | None = Field(
        None, ge=1, le=100_000, description="evaluate on the first N examples only"
    )
    decoding: DecodingIn = Field(default_factory=DecodingIn)


class EvaluationRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    project_id: uuid.UUID
    job_id: uuid.UUID | None
    dataset_version_id: uuid.UUID
    split: str
    candidates: list[dict[str, Any]]
    settings: dict[str, Any]
    status: str
    queue: str
    attempts: int
    worker: str | None
    created_at: datetime
    queued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    progress: dict[str, Any]
    results: dict[str, Any]
    verdict: list[dict[str, Any]] = Field(default_factory=list)
    verdict_summary: dict[str, Any] = Field(default_factory=dict)
    waiting_reason: str | None = Field(
        default=None,
        description="a queued evaluation that no online worker can run: why, in the reader's "
        "language",
    )


class EvalSampleRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    position: int
    messages: list[dict[str, Any]]
    prompt: str
    reference: str
    outputs: dict[str, str]
    scores: dict[str, dict[str, float]]
    delta: float | None


class ProjectReport(BaseModel):
    """The project's evaluation report: its newest finished evaluation and the verdict."""

    project_id: uuid.UUID
    success_criteria: list[str]
    evaluation: EvaluationRead | None
    verdict: list[dict[str, Any]]
    verdict_summary: dict[str, Any]
    history: list[EvaluationRead]
