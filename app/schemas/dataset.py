from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.schemas.common import Input

FormatName = Literal["alpaca", "chat", "sharegpt", "prompt_completion", "self_instruct", "columns"]
MappingRole = Literal["system", "prompt", "input", "completion"]
SplitName = Literal["train", "validation", "test"]


class DatasetVersionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    number: int
    digest: str
    sha256: str
    format: str
    container: str
    records: int
    size_bytes: int
    original_filename: str
    stats: dict[str, Any]
    warnings: list[str]
    split: dict[str, Any]
    lineage: dict[str, Any]
    parent_id: uuid.UUID | None
    dropped_invalid: int
    created_at: datetime


class DatasetRead(BaseModel):
    """A dataset with its newest version's numbers at the top level for convenience."""

    id: uuid.UUID
    project_id: uuid.UUID
    name: str
    created_at: datetime
    version_id: uuid.UUID
    version: int
    records: int
    format: str
    warnings: list[str]
    versions: list[DatasetVersionRead]


class SplitOptions(Input):
    """Fractions of the records held out for validation and test; the rest trains."""

    validation: float = Field(0.05, ge=0, lt=1)
    test: float = Field(0.05, ge=0, lt=1)
    seed: int = Field(0, ge=0, le=2**31 - 1)

    @model_validator(mode="after")
    def _leaves_training(self) -> SplitOptions:
        if self.validation + self.test >= 1:
            raise ValueError("validation + test must be less than 1: some records must train")
        return self


class ImportRequest(Input):
    """How to turn a received file into a dataset version."""

    name: str | None = Field(None, max_length=255, description="defaults to the file name")
    dataset_id: uuid.UUID | None = Field(
        None, description="add the file as a new version of this dataset"
    )
    format: FormatName | None = Field(None, description="override format detection")
    mapping: dict[MappingRole, str] | None = Field(
        None,
        description="which field or column holds each part, e.g. "
        '{"prompt": "question", "completion": "answer"}; implies format "columns"',
    )
    drop_invalid: bool = Field(
        False, description="skip invalid records instead of refusing the file (recorded)"
    )
    split: SplitOptions = Field(default_factory=SplitOptions)
    validation_upload_id: uuid.UUID | None = Field(
        None, description="a separate validation file (an upload of this project)"
    )
    test_upload_id: uuid.UUID | None = Field(
        None, description="a separate test file (an upload of this project)"
    )

    @model_validator(mode="after")
    def _mapping_complete(self) -> ImportRequest:
        if self.format == "columns" and not self.mapping:
            raise ValueError('format "columns" needs a `mapping` of your columns')
        if self.mapping is not None and self.format not in (None, "columns", "prompt_completion"):
            raise ValueError(f"a `mapping` cannot be combined with format {self.format!r}")
        if self.mapping is not None:
            missing = [r for r in ("prompt", "completion") if not self.mapping.get(r)]
            if missing:
                raise ValueError(f"the mapping needs a column for {' and '.join(missing)}")
        return self


class UploadRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    project_id: uuid.UUID
    filename: str
    size_bytes: int
    status: str
    container: str | None
    columns: list[str]
    sample: list[dict[str, Any]]
    detected_format: str | None
    suggested_mapping: dict[str, str] | None
    problem: str | None
    progress_bytes: int
    error_count: int
    errors: list[dict[str, Any]]
    valid_records: int
    companions: dict[str, str]
    version_id: uuid.UUID | None
    created_at: datetime


class CleanRequest(Input):
    """Cleaning steps; the result is a new version whose lineage records what was removed."""

    dedupe: bool = Field(
        True, description="remove repeated records (copies of a test record leave train too)"
    )
    max_chars: int | None = Field(None, ge=1, description="drop records longer than this")
    max_tokens: int | None = Field(
        None, ge=1, description="drop records longer than this many tokens of `tokenizer`"
    )
    tokenizer: str | None = Field(None, max_length=512)
    min_answer_chars: int | None = Field(
        None, ge=1, description="drop records with an answer shorter than this"
    )

    @model_validator(mode="after")
    def _tokens_need_tokenizer(self) -> CleanRequest:
        if self.max_tokens is not None and not self.tokenizer:
            raise ValueError("`max_tokens` needs a `tokenizer` to count with")
        return self


class RecordRead(BaseModel):
    index: int
    line: int | None
    messages: list[dict[str, str]]


class RecordsPage(BaseModel):
    split: SplitName
    items: list[RecordRead]
    total: int
    limit: int
    offset: int


class PreviewPiece(BaseModel):
    text: str
    loss: bool
    truncated: bool


class PreviewRead(BaseModel):
    split: SplitName
    index: int
    line: int | None
    tokenizer: str
    max_seq_length: int
    total_tokens: int
    loss_tokens: int
    truncated_tokens: int
    template_fallback: bool
    pieces: list[PreviewPiece]


class TokenizerRead(BaseModel):
    name: str
    title: str
