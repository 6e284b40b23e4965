"""What every record format shares: the base class, and checks that collect a record's problems.

A format (`dataset_chat_formats`, `dataset_instruction_formats`, `dataset_column_formats`)
normalizes one parsed JSON object (or one table row) into ``[{"role", "content"}, ...]``,
raising `RecordProblems` with every wrong field at once, so a person can fix a record in one go.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

Message = dict[str, str]

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Problem:
    field: str | None
    message: str


class RecordProblems(Exception):
    """Every problem found in one record."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(p.message for p in problems))
        self.problems = problems


class NoAnswer(Exception):
    """A question/answer record whose answer field is there but empty.

    Evaluation sets hold questions without a reference answer (BELLE's eval set leaves 369 of
    1000 empty); when the fields were recognised rather than chosen, such records are left out
    with a warning instead of failing the file.
    """

    def __init__(self, field: str) -> None:
        super().__init__(field)
        self.field = field


def show(value: Any, limit: int = 40) -> str:
    """A short one-line rendering of a JSON value for error messages (Chinese stays readable)."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (ValueError, RecursionError):  # unpaired surrogates, absurd nesting
        text = ascii(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe(value: Any) -> str:
    """What kind of JSON value this is, in words: 'a number (42)', 'a list', 'null (no value)'."""
    if value is None:
        return "null (no value)"
    if isinstance(value, bool):
        return f"true/false ({show(value)})"
    if isinstance(value, int | float):
        return f"a number ({show(value)})"
    if isinstance(value, str):
        return f"text ({show(value)})"
    if isinstance(value, list):
        return f"a list of {len(value)} item{'' if len(value) == 1 else 's'}"
    return "an object {…}"


def field_list(record: dict[str, Any], limit: int = 8) -> str:
    names = [f"`{name}`" for name in sorted(record)]
    if not names:
        return "no fields"
    if len(names) > limit:
        return ", ".join(names[:limit]) + f" and {len(names) - limit} more"
    return ", ".join(names)


def _blank(text: str) -> bool:
    # the same as `not text.strip()` without copying a long text
    return not text or text.isspace()


class Checker:
    """Collects every problem in one record instead of stopping at the first."""

    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record
        self.problems: list[Problem] = []

    def add(self, field: str | None, message: str) -> None:
        self.problems.append(Problem(field, message))

    def field(self, name: str, *, required: bool, why: str) -> str | None:
        """A top-level text field; null counts as absent for optional fields."""
        if name not in self.record:
            if required:
                has = field_list(self.record)
                self.add(name, f"`{name}` is missing (the record has {has}): {why}")
            return None
        value = self.record[name]
        if value is None and not required:
            return None
        return self.text(name, value, required=required, why=why)

    def text(self, path: str, value: Any, *, required: bool, why: str) -> str | None:
        """Check one text value at `path`; return it when usable, None when absent or wrong."""
        if value is None and required:
            self.add(path, f"`{path}` is empty (null): {why}")
            return None
        if not isinstance(value, str):
            self.add(path, f"`{path}` must be text, but it is {describe(value)}")
            return None
        if _blank(value):
            if required:
                self.add(path, f"`{path}` is empty: {why}")
            return None
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            # JSON can spell half of a UTF-16 pair ("\ud83d"); that happens when a tool cuts text
            # in the middle of an emoji, and it cannot be written back out as UTF-8.
            self.add(
                path,
                f"`{path}` contains a broken character (an unpaired \\u{ord(value[exc.start]):04x} "
                f"at character {exc.start + 1}): the text was probably cut in the middle of an "
                "emoji or symbol; fix or remove that character",
            )
            return None
        return value

    def done(self) -> None:
        if self.problems:
            raise RecordProblems(self.problems)


class RecordFormat(ABC):
    """One way of writing a training record. Subclasses are registered in `FORMATS`."""

    name: ClassVar[str]
    # Fields that identify the format: a record "looks like" the formats whose fields it has most.
    signature: ClassVar[tuple[str, ...]]
    # How the format is spelled, for messages that tell a person what we expected.
    fields_hint: ClassVar[str]
    # Whether one record holds several conversations (use `conversations`, not `normalize`).
    splits: ClassVar[bool] = False
    # Whether records are recognised by their fields (False: only when chosen explicitly).
    detectable: ClassVar[bool] = True

    def score(self, record: dict[str, Any]) -> int:
        return len(record.keys() & self.signature)

    def present(self, record: dict[str, Any]) -> list[str]:
        """The identifying fields `record` has, in the order the format lists them."""
        return [name for name in self.signature if name in record]

    @abstractmethod
    def normalize(self, record: dict[str, Any]) -> list[Message]:
        """Return the record as chat messages, or raise RecordProblems listing what is wrong."""

    def conversations(self, record: dict[str, Any]) -> list[list[Message]]:
        """Every conversation the record holds (one, except for formats that split)."""
        return [self.normalize(record)]

    def quick(self, record: dict[str, Any]) -> list[Message] | None:
        """`normalize` for a plainly valid record from a JSON parser; None means "ask normalize".

        Callers only pass values decoded from valid UTF-8 (so text has no unpaired surrogates).
        """
        return None
