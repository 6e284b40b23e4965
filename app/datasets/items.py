"""What the dataset readers yield: each record's value, or why it cannot be read, by line.

Every container (`dataset_containers`, `dataset_json_array`, `dataset_tabular`) streams these,
so the validator treats a JSONL line, a JSON array element and a table row alike.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from app.core.words import size_in_words  # noqa: F401  (re-exported for the readers)


class Parsed(NamedTuple):
    line: int  # 1-based line (JSON) or spreadsheet row (CSV, XLSX) where the record starts
    value: Any


class Unreadable(NamedTuple):
    line: int
    message: str
    # The file as a whole is unusable here (reading stopped, or its layout is wrong): skipping
    # the record would not fix it.
    fatal: bool = False
    field: str | None = None


Item = Parsed | Unreadable


class BytesRead:
    """Bytes of the file read so far, for progress reports."""

    def __init__(self) -> None:
        self.bytes = 0
