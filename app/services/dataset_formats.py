"""Record formats of training data: how to recognise a record and turn it into chat messages.

A format is one small class registered in `FORMATS`. It names the fields that identify it and
normalizes one parsed JSON object into ``[{"role", "content"}, ...]``, raising `RecordProblems`
with every wrong field at once, so a person can fix a record in one go.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

Message = dict[str, str]

ROLES = ("system", "user", "assistant")
# Names other tools use for roles; suggesting ours turns a puzzling error into a one-word fix.
_ROLE_HINTS = {
    "human": "user",
    "question": "user",
    "gpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "ai": "assistant",
    "answer": "assistant",
}


@dataclass(frozen=True)
class Problem:
    field: str | None
    message: str


class RecordProblems(Exception):
    """Every problem found in one record."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(p.message for p in problems))
        self.problems = problems


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


class _Checker:
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
        if not value.strip():
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

    def score(self, record: dict[str, Any]) -> int:
        return len(record.keys() & self.signature)

    @abstractmethod
    def normalize(self, record: dict[str, Any]) -> list[Message]:
        """Return the record as chat messages, or raise RecordProblems listing what is wrong."""


class AlpacaFormat(RecordFormat):
    name = "alpaca"
    signature = ("instruction", "input", "output")
    fields_hint = "an alpaca record needs `instruction` and `output` (`input` is optional)"

    def normalize(self, record: dict[str, Any]) -> list[Message]:
        check = _Checker(record)
        instruction = check.field(
            "instruction", required=True, why="every record needs a task or a question"
        )
        input_text = check.field("input", required=False, why="")
        output = check.field("output", required=True, why="every record needs an answer")
        system = check.field("system", required=False, why="")
        history = self._history(check)
        check.done()
        assert instruction is not None and output is not None

        messages: list[Message] = []
        if system:
            messages.append({"role": "system", "content": system})
        for question, answer in history:
            messages.append({"role": "user", "content": question})
            messages.append({"role": "assistant", "content": answer})
        prompt = f"{instruction}\n\n{input_text}" if input_text else instruction
        messages.append({"role": "user", "content": prompt})
        messages.append({"role": "assistant", "content": output})
        return messages

    @staticmethod
    def _history(check: _Checker) -> list[tuple[str, str]]:
        history = check.record.get("history")
        if history is None:
            return []
        if not isinstance(history, list):
            check.add(
                "history",
                "`history` must be a list of [question, answer] pairs, "
                f"but it is {describe(history)}",
            )
            return []
        pairs: list[tuple[str, str]] = []
        for i, pair in enumerate(history):
            path = f"history[{i}]"
            if not isinstance(pair, list) or len(pair) != 2:
                check.add(
                    path, f"`{path}` must be a pair [question, answer], but it is {describe(pair)}"
                )
                continue
            question = check.text(
                f"{path}[0]", pair[0], required=True, why="an earlier question needs text"
            )
            answer = check.text(
                f"{path}[1]", pair[1], required=True, why="an earlier answer needs text"
            )
            if question is not None and answer is not None:
                pairs.append((question, answer))
        return pairs


class ChatFormat(RecordFormat):
    name = "chat"
    signature = ("messages",)
    fields_hint = 'a chat record needs `messages`: [{"role": "user", "content": …}, …]'

    def normalize(self, record: dict[str, Any]) -> list[Message]:
        check = _Checker(record)
        turns = record.get("messages")
        if "messages" not in record:
            check.add("messages", f"`messages` is missing (the record has {field_list(record)})")
        elif not isinstance(turns, list):
            check.add(
                "messages",
                f'`messages` must be a list of turns {{"role": …, "content": …}}, '
                f"but it is {describe(turns)}",
            )
        elif not turns:
            check.add(
                "messages", "`messages` is empty: add at least a user turn and an assistant turn"
            )
        check.done()
        assert isinstance(turns, list)

        messages = [m for i, turn in enumerate(turns) if (m := self._turn(check, i, turn))]
        check.done()
        roles = [m["role"] for m in messages]
        if "user" not in roles:
            check.add(
                "messages", "`messages` has no user turn: the model needs something to answer"
            )
        if "assistant" not in roles:
            check.add(
                "messages",
                "`messages` has no assistant turn: the model learns from the assistant's answers",
            )
        elif roles[-1] != "assistant":
            last = len(roles) - 1
            check.add(
                "messages",
                f"`messages` must end with an assistant turn, but the last one (messages[{last}]) "
                f"is {roles[-1]}: the model learns to answer, so end on its answer",
            )
        check.done()
        return messages

    @staticmethod
    def _turn(check: _Checker, i: int, turn: Any) -> Message | None:
        path = f"messages[{i}]"
        if not isinstance(turn, dict):
            check.add(
                path,
                f"`{path}` must be an object with `role` and `content`, but it is {describe(turn)}",
            )
            return None
        role = turn.get("role")
        if "role" not in turn:
            check.add(f"{path}.role", f"`{path}.role` is missing: use system, user or assistant")
        elif not isinstance(role, str):
            check.add(f"{path}.role", f"`{path}.role` must be text, but it is {describe(role)}")
        elif role not in ROLES:
            hint = _ROLE_HINTS.get(role.strip().lower(), role.strip().lower())
            suggestion = f' (use "{hint}")' if hint in ROLES else ""
            check.add(
                f"{path}.role",
                f"`{path}.role` is {show(role)}: "
                f"a role must be system, user or assistant{suggestion}",
            )
            role = None
        content = None
        if "content" not in turn:
            check.add(f"{path}.content", f"`{path}.content` is missing: every turn needs text")
        else:
            content = check.text(
                f"{path}.content", turn["content"], required=True, why="every turn needs text"
            )
        if isinstance(role, str) and content is not None:
            return {"role": role, "content": content}
        return None


FORMATS: dict[str, RecordFormat] = {fmt.name: fmt for fmt in (AlpacaFormat(), ChatFormat())}


def formats_of(record: dict[str, Any]) -> list[str]:
    """The formats whose identifying fields this record has most of (empty: none; 2+: a tie)."""
    scores = {name: fmt.score(record) for name, fmt in FORMATS.items()}
    best = max(scores.values(), default=0)
    return [name for name, score in scores.items() if score == best] if best else []


def signature_fields(format_name: str, record: dict[str, Any]) -> str:
    """The identifying fields of `format_name` that `record` has, e.g. "`messages`"."""
    return ", ".join(f"`{name}`" for name in FORMATS[format_name].signature if name in record)


def detect_format(records: list[dict[str, Any]]) -> str | None:
    """The format most records look like; on a tie the one seen first; None when none match."""
    votes: dict[str, int] = {}
    for record in records:
        names = formats_of(record)
        if len(names) == 1:
            votes[names[0]] = votes.get(names[0], 0) + 1
    # dicts keep insertion order and max() returns the first maximum, so ties go to the first seen
    return max(votes, key=votes.__getitem__) if votes else None


def unknown_format_message(record: dict[str, Any]) -> str:
    """Why a record matches no format (or several), and what each format needs."""
    names = formats_of(record)
    expected = "; ".join(fmt.fields_hint for fmt in FORMATS.values())
    if len(names) > 1:
        mixed = "; ".join(f"{name}: {signature_fields(name, record)}" for name in names)
        return (
            f"could not tell the format: this record has fields of several formats ({mixed}); "
            f"keep the fields of one format, or choose the format when uploading"
        )
    return (
        f"could not tell the format of the records: this one has {field_list(record)}, "
        f"but {expected}"
    )
