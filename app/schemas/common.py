from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """A page of a list: ``items`` plus enough to ask for the next one."""

    items: list[T]
    total: int
    limit: int
    offset: int
