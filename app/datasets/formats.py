"""Record formats of training data: how to recognise a record and turn it into chat messages.

A format is one small class registered in `FORMATS`. It names the fields that identify it and
normalizes one parsed JSON object (or one table row) into ``[{"role", "content"}, ...]``,
raising `RecordProblems` with every wrong field at once, so a person can fix a record in one go.
`quick` is the same conversion for the common, valid record with fewer Python steps; whenever
it is unsure it returns None and `normalize` decides, so both always agree on what is valid.

Here: the registry and recognising a record's format. The formats live by family:
`dataset_chat_formats` (chat, ShareGPT), `dataset_instruction_formats` (alpaca, self-instruct),
`dataset_column_formats` (a mapping of fields, prompt/completion); what they share is in
`dataset_format_base`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from app.datasets.chat_formats import SHAREGPT_ROLES, ChatFormat, ShareGPTFormat
from app.datasets.column_formats import (
    COMPLETION_ALIASES,
    MAPPING_ROLES,
    PROMPT_ALIASES,
    ColumnsFormat,
    PromptCompletionFormat,
    mapping_problem,
)
from app.datasets.format_base import (
    ROLES,
    Message,
    NoAnswer,
    Problem,
    RecordFormat,
    RecordProblems,
    describe,
    field_list,
    show,
)
from app.datasets.instruction_formats import AlpacaFormat, SelfInstructFormat

__all__ = [
    "COMPLETION_ALIASES",
    "FORMATS",
    "MAPPING_ROLES",
    "PROMPT_ALIASES",
    "ROLES",
    "SHAREGPT_ROLES",
    "AlpacaFormat",
    "ChatFormat",
    "ColumnsFormat",
    "Message",
    "NoAnswer",
    "Problem",
    "PromptCompletionFormat",
    "RecordFormat",
    "RecordProblems",
    "SelfInstructFormat",
    "ShareGPTFormat",
    "describe",
    "detect",
    "detect_format",
    "field_list",
    "formats_of",
    "mapping_problem",
    "show",
    "signature_fields",
    "unknown_format_message",
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
