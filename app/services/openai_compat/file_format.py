"""OpenAI's fine-tuning files: checked line by line, and written out as tunelab chat records.

Two kinds of JSONL file, one record a line:

- chat (supervised): ``{"messages": [...], "tools": [...]}``; roles system, developer, user,
  assistant and tool; an assistant turn may carry ``tool_calls`` and ``weight`` (0 or 1);
- preference (DPO): ``{"input": {"messages": [...]}, "preferred_output": [assistant turn],
  "non_preferred_output": [assistant turn]}``.

Every problem is reported with its line and field, as tunelab's data step reports its own
(``app.datasets``), and each valid record becomes what that step makes of a chat record:
``{"messages": [{"role", "content"}, ...], "line": N}``. What tunelab trains differently is
named in ``FileCheck.features`` (``weight``: every assistant turn is trained; ``tools``: tool
definitions, calls and results are trained as text in the turns).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from app.datasets.chat_formats import ChatFormat
from app.datasets.format_base import Checker, RecordProblems, describe, field_list, show

LISTED_ERRORS = 200
CHAT_ROLES = ("system", "developer", "user", "assistant", "tool")
PREFERENCE_FIELDS = ("input", "preferred_output", "non_preferred_output")
FEATURE_NOTES = {
    "weight": "per-message `weight`: tunelab trains on every assistant turn, weight 0 included",
    "tools": "tools and tool calls: trained as text inside the turns (no function-calling "
    "template)",
    "preference": "preference pairs: only a DPO job could use them, and tunelab has no DPO yet",
}


@dataclass(frozen=True)
class LineError:
    line: int | None
    field: str | None
    message: str


@dataclass
class FileCheck:
    kind: str | None = None  # chat | preference
    records: int = 0
    errors: list[LineError] = field(default_factory=list)
    error_count: int = 0
    features: set[str] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return self.error_count == 0 and self.records > 0

    def add(self, line: int, problems: list[tuple[str | None, str]]) -> None:
        self.error_count += len(problems)
        room = LISTED_ERRORS - len(self.errors)
        self.errors.extend(LineError(line, f, m) for f, m in problems[: max(0, room)])


def check_file(src: Path, dest: Path) -> FileCheck:
    """Check every line of ``src``; write the valid records in tunelab's chat form to
    ``dest``. The result's errors are the first 200, its error_count all of them."""
    result = FileCheck()
    with dest.open("wb") as out:
        for line_no, raw in _lines(src):
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                result.add(line_no, [(None, f"not valid JSON: {exc}")])
                continue
            if not isinstance(record, dict):
                result.add(
                    line_no, [(None, f"a line must be a JSON object, not {describe(record)}")]
                )
                continue
            kind = _kind_of(record)
            if kind is None:
                result.add(
                    line_no,
                    [
                        (
                            None,
                            f"the record has {field_list(record)}: a chat record needs "
                            "`messages`; a preference record needs `input`, `preferred_output` "
                            "and `non_preferred_output`",
                        )
                    ],
                )
                continue
            if result.kind is None:
                result.kind = kind
            elif kind != result.kind:
                result.add(
                    line_no,
                    [(None, f"a {kind} record in a file of {result.kind} records: keep one kind")],
                )
                continue
            try:
                messages, features = (
                    _chat_record(record) if kind == "chat" else _preference_record(record)
                )
                # What the data step would refuse (no user turn, not ending on the answer).
                messages = ChatFormat().normalize({"messages": messages})
            except RecordProblems as exc:
                result.add(line_no, [(p.field, p.message) for p in exc.problems])
                continue
            result.features |= features
            result.records += 1
            out.write(orjson.dumps({"messages": messages, "line": line_no}) + b"\n")
    if result.kind == "preference":
        result.features.add("preference")
    return result


def _lines(src: Path) -> Iterator[tuple[int, bytes]]:
    with src.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if raw.strip():
                yield number, raw


def _kind_of(record: dict[str, Any]) -> str | None:
    if "messages" in record:
        return "chat"
    if any(name in record for name in PREFERENCE_FIELDS):
        return "preference"
    return None


def _chat_record(record: dict[str, Any]) -> tuple[list[dict[str, str]], set[str]]:
    check = Checker(record)
    features: set[str] = set()
    tools = _tools(check, record.get("tools"), "tools", features)
    turns = _turn_list(
        check, record.get("messages"), "messages", missing=("messages" not in record)
    )
    messages = [
        m for i, t in enumerate(turns) if (m := _turn(check, t, f"messages[{i}]", features))
    ]
    check.done()
    return _merge(tools, messages), features


def _preference_record(record: dict[str, Any]) -> tuple[list[dict[str, str]], set[str]]:
    check = Checker(record)
    features: set[str] = set()
    given = record.get("input")
    messages: list[dict[str, str]] = []
    tools = ""
    if not isinstance(given, dict):
        check.add(
            "input",
            '`input` is missing: it holds the conversation, {"messages": [...]}'
            if "input" not in record
            else f'`input` must be an object {{"messages": [...]}}, but it is {describe(given)}',
        )
    else:
        tools = _tools(check, given.get("tools"), "input.tools", features)
        turns = _turn_list(
            check, given.get("messages"), "input.messages", missing="messages" not in given
        )
        for i, turn in enumerate(turns):
            if (m := _turn(check, turn, f"input.messages[{i}]", features)) is not None:
                messages.append(m)
    answers = {}
    for name in ("preferred_output", "non_preferred_output"):
        value = record.get(name)
        if name not in record:
            check.add(name, f"`{name}` is missing: a list of one assistant message")
        elif not isinstance(value, list) or len(value) != 1:
            check.add(
                name, f"`{name}` must be a list of one assistant message, not {describe(value)}"
            )
        else:
            turn = _turn(check, value[0], f"{name}[0]", features)
            if turn is not None and turn["role"] != "assistant":
                check.add(f"{name}[0].role", f"`{name}[0].role` must be assistant")
            elif turn is not None:
                answers[name] = turn
    check.done()
    return _merge(tools, [*messages, answers["preferred_output"]]), features


def _turn_list(check: Checker, turns: Any, path: str, *, missing: bool) -> list[Any]:
    if missing:
        check.add(path, f"`{path}` is missing")
    elif not isinstance(turns, list):
        check.add(path, f"`{path}` must be a list of messages, but it is {describe(turns)}")
    elif not turns:
        check.add(path, f"`{path}` is empty: add at least a user turn and an assistant turn")
    else:
        return turns
    return []


def _tools(check: Checker, tools: Any, path: str, features: set[str]) -> str:
    """Tool definitions as the text a system turn carries ("" without any)."""
    if tools is None:
        return ""
    if not isinstance(tools, list):
        check.add(path, f"`{path}` must be a list of tools, but it is {describe(tools)}")
        return ""
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            check.add(
                f"{path}[{i}]",
                f'`{path}[{i}]` must be {{"type": "function", "function": {{"name": …, '
                f'"parameters": …}}}}, but it is {show(tool)}',
            )
    if not tools:
        return ""
    features.add("tools")
    return "Tools you may call:\n" + orjson.dumps(tools).decode()


def _turn(check: Checker, turn: Any, path: str, features: set[str]) -> dict[str, str] | None:
    if not isinstance(turn, dict):
        check.add(
            path, f"`{path}` must be an object with `role` and `content`, not {describe(turn)}"
        )
        return None
    role = turn.get("role")
    if role not in CHAT_ROLES:
        check.add(
            f"{path}.role",
            f"`{path}.role` is {show(role)}: use system, developer, user, assistant or tool",
        )
        return None
    if "weight" in turn:
        weight = turn["weight"]
        if role != "assistant":
            check.add(f"{path}.weight", f"`{path}.weight` is only for assistant messages")
        elif weight not in (0, 1) or isinstance(weight, bool):
            check.add(f"{path}.weight", f"`{path}.weight` must be 0 or 1, not {show(weight)}")
        else:
            features.add("weight")
    text = _content(check, turn.get("content"), f"{path}.content")
    calls = turn.get("tool_calls")
    if calls is not None:
        if role != "assistant":
            check.add(f"{path}.tool_calls", f"`{path}.tool_calls` is only for assistant messages")
        elif not isinstance(calls, list) or not all(
            isinstance(c, dict) and isinstance(c.get("function"), dict) for c in calls
        ):
            check.add(
                f"{path}.tool_calls",
                f'`{path}.tool_calls` must be a list of {{"id", "type": "function", '
                f'"function": {{"name", "arguments"}}}}, not {show(calls)}',
            )
        elif calls:
            features.add("tools")
            rendered = "\n".join(
                "<tool_call>" + orjson.dumps(c["function"]).decode() + "</tool_call>" for c in calls
            )
            text = f"{text}\n{rendered}" if text else rendered
    if role == "tool":
        features.add("tools")
        if text:
            return {"role": "user", "content": f"<tool_response>{text}</tool_response>"}
    if not text:
        why = "an assistant turn needs `content` or `tool_calls`" if role == "assistant" else ""
        check.add(f"{path}.content", f"`{path}.content` is empty{': ' + why if why else ''}")
        return None
    return {"role": "system" if role == "developer" else role, "content": text}


def _content(check: Checker, content: Any, path: str) -> str:
    """Text content, or the text parts of a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            if (
                isinstance(part, dict)
                and part.get("type") == "text"
                and isinstance(part.get("text"), str)
            ):
                texts.append(part["text"])
            else:
                check.add(
                    f"{path}[{i}]",
                    f"`{path}[{i}]` is not a text part ({show(part)}): only text is trained here",
                )
        return "".join(texts)
    check.add(path, f"`{path}` must be text or a list of text parts, not {describe(content)}")
    return ""


def _merge(tools: str, messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """Tool definitions into the system turn, and turns of one role in a row into one (a tool
    result followed by the user's next words, say), as chat templates expect."""
    if tools:
        if messages and messages[0]["role"] == "system":
            messages = [
                {"role": "system", "content": f"{messages[0]['content']}\n\n{tools}"},
                *messages[1:],
            ]
        else:
            messages = [{"role": "system", "content": tools}, *messages]
    merged: list[dict[str, str]] = []
    for message in messages:
        if merged and merged[-1]["role"] == message["role"]:
            merged[-1] = {
                "role": message["role"],
                "content": f"{merged[-1]['content']}\n\n{message['content']}",
            }
        else:
            merged.append(dict(message))
    return merged
