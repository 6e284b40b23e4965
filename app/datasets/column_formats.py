"""Record formats read through a mapping of fields (or table columns) to prompt and answer.

`ColumnsFormat` uses the mapping a person chose; `PromptCompletionFormat` is `prompt` /
`completion`, or a well-known pair of names public datasets give those two fields.
"""

from __future__ import annotations

from typing import Any, ClassVar

from app.datasets.format_base import Checker, Message, NoAnswer, RecordFormat, RecordProblems

# What public question/answer sets call their two fields: gsm8k, BELLE eval, SAMSum, …
PROMPT_ALIASES = ("prompt", "question", "query", "dialogue")
COMPLETION_ALIASES = ("completion", "answer", "std_answer", "response", "summary")
# Roles of an explicit column mapping; prompt and completion are required.
MAPPING_ROLES = ("system", "prompt", "input", "completion")


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
        check = Checker(record)
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
