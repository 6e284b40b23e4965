from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class DatasetVersionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    number: int
    sha256: str
    format: str
    container: str
    records: int
    size_bytes: int
    original_filename: str
    stats: dict[str, Any]
    warnings: list[str]
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
