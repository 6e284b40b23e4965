"""Record formats that hold a list of turns: OpenAI-style chat (`messages`) and ShareGPT."""

from __future__ import annotations

from typing import Any, ClassVar

from app.datasets.format_base import (
    ROLES,
    Checker,
    Message,
    RecordFormat,
    describe,
    field_list,
    show,
)

_ROLE_SET = frozenset(ROLES)
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
# ShareGPT speakers (LLaMA-Factory and FastChat spell them both ways).
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}


class _TurnsFormat(RecordFormat):
    """Formats whose record is a list of turns under one field (chat, ShareGPT)."""

    turns_field: ClassVar[str]
    turn_hint: ClassVar[str]

    def _turns(self, check: Checker) -> list[Any]:
        name, record = self.turns_field, check.record
        turns = record.get(name)
        if name not in record:
            check.add(name, f"`{name}` is missing (the record has {field_list(record)})")
        elif not isinstance(turns, list):
            check.add(
                name,
                f"`{name}` must be a list of turns {self.turn_hint}, but it is {describe(turns)}",
            )
        elif not turns:
            check.add(name, f"`{name}` is empty: add at least a user turn and an assistant turn")
        check.done()
        assert isinstance(turns, list)
        return turns

    def _order(self, check: Checker, messages: list[Message]) -> None:
        name = self.turns_field
        roles = [m["role"] for m in messages]
        if "user" not in roles:
            check.add(name, f"`{name}` has no user turn: the model needs something to answer")
        if "assistant" not in roles:
            check.add(
                name,
                f"`{name}` has no assistant turn: the model learns from the assistant's answers",
            )
        elif roles[-1] != "assistant":
            last = len(roles) - 1
            check.add(
                name,
                f"`{name}` must end with an assistant turn, but the last one ({name}[{last}]) "
                f"is {roles[-1]}: the model learns to answer, so end on its answer",
            )
        check.done()


class ChatFormat(_TurnsFormat):
    name = "chat"
    signature = ("messages",)
    fields_hint = 'a chat record needs `messages`: [{"role": "user", "content": …}, …]'
    turns_field = "messages"
    turn_hint = '{"role": …, "content": …}'

    def normalize(self, record: dict[str, Any]) -> list[Message]:
        check = Checker(record)
        turns = self._turns(check)
        messages = [m for i, turn in enumerate(turns) if (m := self._turn(check, i, turn))]
        check.done()
        self._order(check, messages)
        return messages

    def quick(self, record: dict[str, Any]) -> list[Message] | None:
        turns = record.get("messages")
        if type(turns) is not list or not turns:
            return None
        messages = []
        has_user = False
        role = None
        for turn in turns:
            if type(turn) is not dict:
                return None
            role = turn.get("role")
            content = turn.get("content")
            if (
                type(role) is not str
                or role not in _ROLE_SET
                or type(content) is not str
                or not content
                or content.isspace()
            ):
                return None
            has_user = has_user or role == "user"
            messages.append({"role": role, "content": content})
        if role != "assistant" or not has_user:
            return None
        return messages

    @staticmethod
    def _turn(check: Checker, i: int, turn: Any) -> Message | None:
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


class ShareGPTFormat(_TurnsFormat):
    name = "sharegpt"
    signature = ("conversations",)
    fields_hint = 'a ShareGPT record needs `conversations`: [{"from": "human", "value": …}, …]'
    turns_field = "conversations"
    turn_hint = '{"from": …, "value": …}'
    _allowed = "human, gpt or system (user and assistant also work)"

    def normalize(self, record: dict[str, Any]) -> list[Message]:
        check = Checker(record)
        system = check.field("system", required=False, why="")
        turns = self._turns(check)
        messages = [m for i, turn in enumerate(turns) if (m := self._turn(check, i, turn))]
        check.done()
        self._order(check, messages)
        if system and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": system})
        return messages

    def quick(self, record: dict[str, Any]) -> list[Message] | None:
        turns = record.get("conversations")
        if type(turns) is not list or not turns or record.get("system") is not None:
            return None
        messages = []
        has_user = False
        role = None
        for turn in turns:
            if type(turn) is not dict:
                return None
            who = turn.get("from")
            role = SHAREGPT_ROLES.get(who) if type(who) is str else None
            content = turn.get("value")
            if role is None or type(content) is not str or not content or content.isspace():
                return None
            has_user = has_user or role == "user"
            messages.append({"role": role, "content": content})
        if role != "assistant" or not has_user:
            return None
        return messages

    def _turn(self, check: Checker, i: int, turn: Any) -> Message | None:
        path = f"conversations[{i}]"
        if not isinstance(turn, dict):
            check.add(
                path,
                f"`{path}` must be an object with `from` and `value`, but it is {describe(turn)}",
            )
            return None
        # Some exporters write OpenAI's keys inside `conversations`; read those as well.
        if "from" not in turn and "role" in turn:
            who_key, text_key = "role", "content"
        else:
            who_key, text_key = "from", "value"
        who = turn.get(who_key)
        role = None
        if who_key not in turn:
            check.add(f"{path}.from", f"`{path}.from` is missing: use {self._allowed}")
        elif not isinstance(who, str):
            check.add(
                f"{path}.{who_key}", f"`{path}.{who_key}` must be text, but it is {describe(who)}"
            )
        elif who in SHAREGPT_ROLES:
            role = SHAREGPT_ROLES[who]
        else:
            check.add(
                f"{path}.{who_key}",
                f"`{path}.{who_key}` is {show(who)}: a speaker must be {self._allowed}",
            )
        content = None
        if text_key not in turn:
            check.add(
                f"{path}.{text_key}", f"`{path}.{text_key}` is missing: every turn needs text"
            )
        else:
            content = check.text(
                f"{path}.{text_key}", turn[text_key], required=True, why="every turn needs text"
            )
        if role is not None and content is not None:
            return {"role": role, "content": content}
        return None
