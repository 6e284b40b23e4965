"""Record formats of training data: how to recognise a record and turn it into chat messages.

A format is one small class registered in `FORMATS`. It names the fields that identify it and
normalizes one parsed JSON object (or one table row) into ``[{"role", "content"}, ...]``,
raising `RecordProblems` with every wrong field at once, so a person can fix a record in one go.
`quick` is the same conversion for the common, valid record with fewer Python steps; whenever
it is unsure it returns None and `normalize` decides, so both always agree on what is valid.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar

Message = dict[str, str]

ROLES = ("system", "user", "assistant")
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
# What public question/answer sets call their two fields: gsm8k, BELLE eval, SAMSum, …
PROMPT_ALIASES = ("prompt", "question", "query", "dialogue")
COMPLETION_ALIASES = ("completion", "answer", "std_answer", "response", "summary")
# Roles of an explicit column mapping; prompt and completion are required.
MAPPING_ROLES = ("system", "prompt", "input", "completion")


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

    def quick(self, record: dict[str, Any]) -> list[Message] | None:
        instruction = record.get("instruction")
        output = record.get("output")
        if type(instruction) is not str or type(output) is not str:
            return None
        if not instruction or instruction.isspace() or not output or output.isspace():
            return None
        if record.get("system") is not None or record.get("history") is not None:
            return None  # rare: let normalize handle them
        text = record.get("input")
        if text is not None:
            if type(text) is not str:
                return None
            if text and not text.isspace():
                instruction = f"{instruction}\n\n{text}"
        return [{"role": "user", "content": instruction}, {"role": "assistant", "content": output}]

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


class _TurnsFormat(RecordFormat):
    """Formats whose record is a list of turns under one field (chat, ShareGPT)."""

    turns_field: ClassVar[str]
    turn_hint: ClassVar[str]

    def _turns(self, check: _Checker) -> list[Any]:
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

    def _order(self, check: _Checker, messages: list[Message]) -> None:
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
        check = _Checker(record)
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


class ShareGPTFormat(_TurnsFormat):
    name = "sharegpt"
    signature = ("conversations",)
    fields_hint = 'a ShareGPT record needs `conversations`: [{"from": "human", "value": …}, …]'
    turns_field = "conversations"
    turn_hint = '{"from": …, "value": …}'
    _allowed = "human, gpt or system (user and assistant also work)"

    def normalize(self, record: dict[str, Any]) -> list[Message]:
        check = _Checker(record)
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

    def _turn(self, check: _Checker, i: int, turn: Any) -> Message | None:
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


class ColumnsFormat(RecordFormat):
    """Fields (or table columns) chosen by a mapping: prompt and completion, maybe input, system."""

    name = "columns"
    signature: ClassVar[tuple[str, ...]] = ()
    fields_hint = "choose which field holds the prompt and which the answer (a column mapping)"
    detectable = False

    def __init__(self, mapping: dict[str, str] | None = None) -> None:
        self.mapping = dict(mapping or {})
        self._columns = [
            (role, self.mapping[role]) for role in MAPPING_ROLES if role in self.mapping
        ]

    def with_mapping(self, mapping: dict[str, str]) -> ColumnsFormat:
        return type(self)(mapping)

    def normalize(self, record: dict[str, Any]) -> list[Message]:
        if "prompt" not in self.mapping or "completion" not in self.mapping:
            raise ValueError("a column mapping needs `prompt` and `completion`")
        check = _Checker(record)
        why = {
            "prompt": f"every record needs a prompt (`{self.mapping['prompt']}` is the prompt)",
            "completion": (
                f"every record needs an answer (`{self.mapping['completion']}` is the answer)"
            ),
        }
        texts = {
            role: check.field(column, required=role in why, why=why.get(role, ""))
            for role, column in self._columns
        }
        check.done()
        prompt, completion = texts["prompt"], texts["completion"]
        assert prompt is not None and completion is not None
        if texts.get("input"):
            prompt = f"{prompt}\n\n{texts['input']}"
        messages: list[Message] = []
        if texts.get("system"):
            messages.append({"role": "system", "content": texts["system"]})  # type: ignore[dict-item]
        messages.append({"role": "user", "content": prompt})
        messages.append({"role": "assistant", "content": completion})
        return messages

    def quick(self, record: dict[str, Any]) -> list[Message] | None:
        texts: dict[str, str] = {}
        for role, column in self._columns:
            value = record.get(column)
            if value is None:
                if role in ("prompt", "completion"):
                    return None
                continue
            if type(value) is not str:
                return None
            if not value or value.isspace():
                if role in ("prompt", "completion"):
                    return None
                continue
            texts[role] = value
        prompt = texts["prompt"]
        if "input" in texts:
            prompt = f"{prompt}\n\n{texts['input']}"
        if "system" in texts:
            return [
                {"role": "system", "content": texts["system"]},
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": texts["completion"]},
            ]
        return [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": texts["completion"]},
        ]


class PromptCompletionFormat(ColumnsFormat):
    """`prompt` / `completion`, or a well-known pair of names for them (`question` / `answer`)."""

    name = "prompt_completion"
    signature = PROMPT_ALIASES + COMPLETION_ALIASES
    fields_hint = (
        "a prompt/completion record needs `prompt` and `completion` "
        "(or `question` and `answer`, `dialogue` and `summary`, …)"
    )
    detectable = True

    def __init__(self, mapping: dict[str, str] | None = None) -> None:
        super().__init__(mapping or {"prompt": "prompt", "completion": "completion"})

    def score(self, record: dict[str, Any]) -> int:
        # a pair counts once, however many aliases a record happens to have
        return any(n in record for n in PROMPT_ALIASES) + any(
            n in record for n in COMPLETION_ALIASES
        )

    def normalize(self, record: dict[str, Any]) -> list[Message]:
        try:
            return super().normalize(record)
        except RecordProblems as exc:
            answer = self.mapping["completion"]
            value = record.get(answer)
            if [p.field for p in exc.problems] == [answer] and isinstance(value, str):
                raise NoAnswer(answer) from None
            raise

    @staticmethod
    def mapping_of(record: dict[str, Any]) -> dict[str, str] | None:
        """The first prompt and completion aliases `record` has, or None if it lacks one."""
        prompt = next((n for n in PROMPT_ALIASES if n in record), None)
        completion = next((n for n in COMPLETION_ALIASES if n in record), None)
        if prompt is None or completion is None:
            return None
        return {"prompt": prompt, "completion": completion}


class SelfInstructFormat(RecordFormat):
    """A task with several examples: `instruction` + `instances: [{input, output}, …]`."""

    name = "self_instruct"
    signature = ("instruction", "instances")
    fields_hint = (
        'a self-instruct record needs `instruction` and `instances`: [{"input": …, "output": …}, …]'
    )
    splits = True

    def normalize(self, record: dict[str, Any]) -> list[Message]:
        raise TypeError("a self-instruct record holds several conversations: use conversations()")

    def conversations(self, record: dict[str, Any]) -> list[list[Message]]:
        check = _Checker(record)
        instruction = check.field(
            "instruction", required=True, why="every record needs a task or a question"
        )
        instances = record.get("instances")
        if "instances" not in record:
            check.add(
                "instances",
                f"`instances` is missing (the record has {field_list(record)}): "
                "every task needs examples with an `output`",
            )
        elif not isinstance(instances, list):
            check.add(
                "instances",
                '`instances` must be a list of examples [{"input": …, "output": …}], '
                f"but it is {describe(instances)}",
            )
        elif not instances:
            check.add(
                "instances", "`instances` is empty: add at least one example with an `output`"
            )
        check.done()
        assert instruction is not None and isinstance(instances, list)

        pairs: list[tuple[str | None, str]] = []
        for i, example in enumerate(instances):
            path = f"instances[{i}]"
            if not isinstance(example, dict):
                check.add(
                    path,
                    f"`{path}` must be an object with `input` and `output`, "
                    f"but it is {describe(example)}",
                )
                continue
            text = None
            if example.get("input") is not None:
                text = check.text(f"{path}.input", example["input"], required=False, why="")
            if "output" not in example:
                check.add(
                    f"{path}.output", f"`{path}.output` is missing: every example needs an answer"
                )
                continue
            output = check.text(
                f"{path}.output",
                example["output"],
                required=True,
                why="every example needs an answer",
            )
            if output is not None:
                pairs.append((text, output))
        check.done()
        return [
            [
                {"role": "user", "content": f"{instruction}\n\n{text}" if text else instruction},
                {"role": "assistant", "content": output},
            ]
            for text, output in pairs
        ]


FORMATS: dict[str, RecordFormat] = {
    fmt.name: fmt
    for fmt in (
        AlpacaFormat(),
        ChatFormat(),
        ShareGPTFormat(),
        PromptCompletionFormat(),
        SelfInstructFormat(),
        ColumnsFormat(),
    )
}
_DETECTABLE = [fmt for fmt in FORMATS.values() if fmt.detectable]


def formats_of(record: dict[str, Any]) -> list[str]:
    """The formats whose identifying fields this record has most of (empty: none; 2+: a tie)."""
    scores = {fmt.name: fmt.score(record) for fmt in _DETECTABLE}
    best = max(scores.values(), default=0)
    return [name for name, score in scores.items() if score == best] if best else []


def signature_fields(format_name: str, record: dict[str, Any]) -> str:
    """The identifying fields of `format_name` that `record` has, e.g. "`messages`"."""
    return ", ".join(f"`{name}`" for name in FORMATS[format_name].present(record))


def detect(records: list[dict[str, Any]]) -> tuple[str | None, dict[str, str] | None]:
    """The format most records look like, and for prompt/completion which two fields it uses.

    On a tie the format seen first wins; (None, None) when no record matches a format.
    """
    votes: dict[str, int] = {}
    pairs: Counter[tuple[str, str]] = Counter()
    for record in records:
        names = formats_of(record)
        if len(names) == 1:
            votes[names[0]] = votes.get(names[0], 0) + 1
            if names[0] == PromptCompletionFormat.name and (
                pair := PromptCompletionFormat.mapping_of(record)
            ):
                pairs[(pair["prompt"], pair["completion"])] += 1
    if not votes:
        return None, None
    # dicts keep insertion order and max() returns the first maximum, so ties go to the first seen
    name = max(votes, key=votes.__getitem__)
    if name != PromptCompletionFormat.name:
        return name, None
    if not pairs:
        return name, {"prompt": "prompt", "completion": "completion"}
    prompt, completion = pairs.most_common(1)[0][0]
    return name, {"prompt": prompt, "completion": completion}


def detect_format(records: list[dict[str, Any]]) -> str | None:
    """The format most records look like; on a tie the one seen first; None when none match."""
    return detect(records)[0]


def mapping_problem(mapping: dict[str, str]) -> str | None:
    """Why a column mapping cannot be used (for a person), or None when it can."""
    unknown = [role for role in mapping if role not in MAPPING_ROLES]
    if unknown:
        return (
            f"unknown role{'s' if len(unknown) > 1 else ''} in the column mapping: "
            f"{', '.join(f'`{r}`' for r in unknown)}; the roles are {', '.join(MAPPING_ROLES)}"
        )
    missing = [role for role in ("prompt", "completion") if not mapping.get(role)]
    if missing:
        return (
            f"the column mapping needs {' and '.join(f'`{r}`' for r in missing)}: "
            "say which column holds the prompt and which the answer"
        )
    bad = [role for role, column in mapping.items() if not isinstance(column, str) or not column]
    if bad:
        return f"the column mapping gives no column name for {', '.join(f'`{r}`' for r in bad)}"
    return None


def unknown_format_message(record: dict[str, Any], *, table: bool = False) -> str:
    """Why a record matches no format (or several), and what each format needs."""
    names = formats_of(record)
    if len(names) > 1:
        mixed = "; ".join(f"{name}: {signature_fields(name, record)}" for name in names)
        return (
            f"could not tell the format: this record has fields of several formats ({mixed}); "
            f"keep the fields of one format, or choose the format when uploading"
        )
    if table:
        columns = ", ".join(f"`{name}`" for name in record)  # in the header's order
        return (
            f"could not tell which columns to train on: the columns are {columns}; "
            "choose which column holds the prompt and which the answer (a column mapping), or "
            "name them `instruction`, `input` and `output`, or `prompt` and `completion`"
        )
    expected = "; ".join(fmt.fields_hint for fmt in _DETECTABLE)
    return (
        f"could not tell the format of the records: this one has {field_list(record)}, "
        f"but {expected}; or choose which field holds the prompt and which the answer "
        "(a column mapping)"
    )
