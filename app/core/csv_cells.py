"""The one CSV writer of the product: no cell it writes can start a spreadsheet formula.

Text in our CSV files comes from people (column names, prompts, model answers). Excel and
LibreOffice run a cell that starts with `=`, `+`, `-` or `@` as a formula (`=HYPERLINK(...)`
can send other cells to a stranger's server), and a leading tab or carriage return can hide
such a start. As OWASP advises, such a cell gets a leading `'`, which spreadsheets show as
text. Plain numbers (`-0.25`, `+3`) are left as they are, so they stay numbers.

Every CSV file in app/ and worker/ is written through `safe_writer`; tests/test_code_scan.py
refuses a direct `csv.writer` anywhere else.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def safe_cell(value: Any) -> Any:
    """`value` as a cell a spreadsheet shows as written, never runs.

    Idempotent: a neutralised cell starts with `'`, so passing it again changes nothing.
    """
    if value is None or isinstance(value, int | float):
        return value  # our own numbers (and None, written empty): nothing to run
    text = value if isinstance(value, str) else str(value)
    if text.startswith(FORMULA_STARTS) and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


class SafeCsvWriter:
    """`csv.writer` whose every cell goes through `safe_cell`."""

    def __init__(self, f: SupportsWrite[str], **options: Any) -> None:
        self._writer = csv.writer(f, **options)

    def writerow(self, row: Iterable[Any]) -> Any:
        return self._writer.writerow([safe_cell(cell) for cell in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


def safe_writer(f: SupportsWrite[str], **options: Any) -> SafeCsvWriter:
    """A CSV writer on `f` (options as `csv.writer` takes them) that neutralises formulas."""
    return SafeCsvWriter(f, **options)
