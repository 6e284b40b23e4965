"""How a file's records are read, decided once from the first ones: the format and mapping.

The plan goes to every worker process of a large file, so it is plain picklable data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.datasets.containers import Source
from app.datasets.formats import (
    FORMATS,
    ColumnsFormat,
    PromptCompletionFormat,
    RecordFormat,
    detect,
    formats_of,
)
from app.datasets.items import Item, Parsed, Unreadable

# The format is decided by a majority of the first records, so one odd record at the top does
# not turn every other record into an error. Bounded so a broken file is not buffered whole.
DETECTION_RECORDS = 256
DETECTION_ITEMS = 4096
DETECTION_BYTES = 16 * 1024 * 1024  # so that 256 huge records are not all held at once


@dataclass
class Plan:
    """How records are read, decided once from the first records: picklable, for workers."""

    format: str | None  # the main format (None: not detected)
    mapping: dict[str, str] | None  # for columns / prompt_completion (given or detected)
    declared: bool  # chosen by the person: other formats are errors, not a mix
    mapped: bool  # the person gave the mapping: read every record with it
    drop_invalid: bool
    table: bool  # records are table rows

    def main(self) -> RecordFormat | None:
        if self.format is None:
            return None
        fmt = FORMATS[self.format]
        if self.mapping is not None and isinstance(fmt, ColumnsFormat):
            return fmt.with_mapping(self.mapping)
        return fmt


def read_head(source: Source) -> list[Item]:
    """The first records, enough to detect the format (they stay to be checked)."""
    head: list[Item] = []
    objects = 0
    for item in source.items:
        head.append(item)
        objects += isinstance(item, Parsed) and isinstance(item.value, dict)
        if objects >= DETECTION_RECORDS or len(head) >= DETECTION_ITEMS:
            break
        if objects and source.read.bytes >= DETECTION_BYTES:
            break
        if isinstance(item, Unreadable) and item.fatal:
            break
    return head


def make_plan(
    source: Source,
    head: list[Item],
    *,
    format: str | None,
    mapping: dict[str, str] | None,
    drop: bool,
) -> tuple[Plan, Unreadable | None]:
    """The plan for reading records, and a problem that stops reading before the first one."""
    table = source.columns is not None
    objects = [i.value for i in head if isinstance(i, Parsed) and isinstance(i.value, dict)]
    if table:
        # every row has the header's columns: the header alone says what the records are
        objects = [dict.fromkeys(source.columns or (), "")]
    if mapping is not None:
        # chosen columns: an empty one is an error, whatever the fields are called
        plan = Plan("columns", dict(mapping), True, True, drop, table)
        columns = (source.columns or []) if table else field_names(objects)
        if objects and (missing := [c for c in mapping.values() if c not in columns]):
            return plan, _missing_columns(missing, columns, table)
        return plan, None
    if format is not None:
        pair = None
        if format == PromptCompletionFormat.name:
            pair = detect([o for o in objects if formats_of(o) == [format]])[1] or {
                "prompt": "prompt",
                "completion": "completion",
            }
        return Plan(format, pair, True, False, drop, table), None
    name, pair = detect(objects)
    return Plan(name, pair, False, False, drop, table), None


def field_names(objects: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(key for record in objects for key in record))


def _missing_columns(missing: list[str], columns: list[str] | None, table: bool) -> Unreadable:
    what = "column" if table else "field"
    names = ", ".join(f"`{name}`" for name in missing)
    has = ", ".join(f"`{name}`" for name in columns or []) or "none"
    plural = "s" if len(missing) > 1 else ""
    return Unreadable(
        1,
        (
            f"the mapping names the {what}{plural} {names}, which the file does not have; its "
            f"{what}s are {has}: choose among those"
        ),
        True,
        missing[0],
    )
