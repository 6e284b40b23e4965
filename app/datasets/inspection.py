"""The first records of a file as text and a guess of their format, for a person to confirm
(or to map columns) before the whole file is validated."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from app.datasets.containers import open_values
from app.datasets.formats import detect
from app.datasets.items import Unreadable
from app.datasets.plan import DETECTION_BYTES, DETECTION_RECORDS, field_names
from app.datasets.report import RecordError

PREVIEW_CHARS = 300
# Names people give the two columns of a question/answer table (English and Chinese).
_PROMPT_NAMES = (
    "prompt",
    "question",
    "query",
    "instruction",
    "input",
    "问题",
    "提问",
    "指令",
    "输入",
    "题目",
)
_ANSWER_NAMES = ("completion", "answer", "response", "output", "回答", "答案", "输出", "回复")


@dataclass
class FilePreview:
    """The first records of a file as text, and what we make of it, before validating it all."""

    container: str | None  # "json" | "jsonl" | "csv" | "xlsx"; None when unreadable
    columns: list[str]  # field / column names seen in the first rows, in order
    rows: list[dict[str, str]]  # the first rows, values shortened to PREVIEW_CHARS
    detected_format: str | None
    suggested_mapping: dict[str, str] | None
    problem: str | None  # why the file cannot be read at all, with its line
    problem_line: int | None = None  # that line, on its own


def inspect_file(src: Path, *, filename: str | None = None, rows: int = 20) -> FilePreview:
    """The first `rows` records as text and a guess of the format, for a person to confirm."""
    source = open_values(src, filename=filename)
    shown: list[dict[str, str]] = []
    objects: list[dict[str, Any]] = []
    fatal: Unreadable | None = None
    first: Unreadable | None = None
    for item in source.items:
        if isinstance(item, Unreadable):
            first = first or item
            fatal = fatal or (item if item.fatal else None)
            continue
        if isinstance(item.value, dict):
            objects.append(item.value)
            if len(shown) < rows:
                shown.append({str(k): _preview_text(v) for k, v in item.value.items()})
        if len(objects) >= max(rows, DETECTION_RECORDS):
            break
        if len(shown) >= rows and source.read.bytes >= DETECTION_BYTES:
            break
    columns = source.columns if source.columns is not None else field_names(objects[:rows])
    if source.columns is not None:
        objects = [dict.fromkeys(source.columns, "")]
    name, mapping = detect(objects)
    if name == "alpaca" and objects:
        mapping = {
            role: column
            for role, column in (
                ("system", "system"),
                ("prompt", "instruction"),
                ("input", "input"),
                ("completion", "output"),
            )
            if column in columns
        }
    elif name is None and columns:
        mapping = _guess_mapping(columns)
    problem = fatal or (first if not shown else None)
    return FilePreview(
        container=source.container,
        columns=list(columns),
        rows=shown,
        detected_format=name,
        suggested_mapping=mapping,
        problem=str(RecordError(problem.line, problem.field, problem.message)) if problem else None,
        problem_line=problem.line if problem else None,
    )


def _guess_mapping(columns: list[str]) -> dict[str, str] | None:
    lowered = {column.strip().lower(): column for column in columns}
    prompt = next((lowered[n] for n in _PROMPT_NAMES if n in lowered), None)
    answer = next(
        (lowered[n] for n in _ANSWER_NAMES if n in lowered and lowered[n] != prompt), None
    )
    if prompt is None or answer is None:
        return None
    return {"prompt": prompt, "completion": answer}


def _preview_text(value: Any) -> str:
    if isinstance(value, str):
        text = value
    else:
        try:
            text = orjson.dumps(value).decode()
        except (TypeError, orjson.JSONEncodeError):
            text = str(value)
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"
