"""Evaluation settings the web process validates and the worker runs with (no torch here)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DecodingSettings(BaseModel):
    """How answers are decoded; the same for every model in a comparison, stored with results."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_new_tokens: int = Field(256, ge=1, le=32768)
    temperature: float = Field(0.0, ge=0.0, le=5.0, description="0 means greedy")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0, le=5.0)
    seed: int = 0
    stop: tuple[str, ...] = Field((), description="strings that end an answer (not kept)")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0
