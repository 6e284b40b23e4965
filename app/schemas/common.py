from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, model_validator

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """A page of a list: ``items`` plus enough to ask for the next one."""

    items: list[T]
    total: int
    limit: int
    offset: int


def text_problem(value: Any, path: str = "") -> str | None:
    """Where ``value`` holds text a database cannot store: NUL characters (Postgres refuses
    them) or unpaired surrogates (not encodable as UTF-8). None when it is clean."""
    if isinstance(value, str):
        if "\x00" in value:
            return f"`{path or 'value'}` contains a NUL character"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"`{path or 'value'}` contains an unpaired surrogate (broken Unicode)"
        return None
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)  # type: ignore[assignment]
    else:
        return None
    for key, item in items:
        where = f"{path}.{key}" if path else str(key)
        problem = text_problem(key, where) if isinstance(key, str) else None
        problem = problem or text_problem(item, where)
        if problem:
            return problem
    return None


class Input(BaseModel):
    """Base of request bodies: every string in it, however nested, must be storable text."""

    @model_validator(mode="after")
    def _storable_text(self) -> Input:
        problem = text_problem(self.__dict__)
        if problem:
            raise ValueError(f"{problem}; remove it and send the request again")
        return self
