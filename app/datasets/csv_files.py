"""CSV and TSV tables: the delimiter sniffed from the first rows, rows streamed as records."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.datasets.encoding import BOM, not_utf8
from app.datasets.items import BytesRead, Item, Unreadable
from app.datasets.table_rows import Header, Table, blank_row, no_data_rows

MAX_CELL_BYTES = 16 * 1024 * 1024
SNIFF_BYTES = 64 * 1024
DELIMITERS = (",", ";", "\t", "|")
_NOT_UTF8 = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, kept by surrogateescape


def sniff_delimiter(head: bytes, *, sure: bool = True) -> str | None:
    """The delimiter of a table whose file starts with `head`, or None if it is no table.

    Each candidate splits the first rows; the one that gives the header two or more columns and
    the most rows as wide as the header wins. `sure` asks for a clear table (most rows fit),
    as needed to call a file without a .csv name a table at all.
    """
    text = head.removeprefix(BOM).decode("utf-8", errors="replace")
    if len(head) >= SNIFF_BYTES and "\n" in text:
        text = text[: text.rfind("\n")]
    best: tuple[float, int, str] | None = None
    for delimiter in DELIMITERS:
        rows = []
        try:
            for cells in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter):
                if not blank_row(cells):
                    rows.append(len(cells))
                if len(rows) >= 50:
                    break
        except csv.Error:
            continue
        if not rows or rows[0] < 2:
            continue
        fit = sum(width == rows[0] for width in rows) / len(rows)
        if best is None or (fit, rows[0]) > best[:2]:
            best = (fit, rows[0], delimiter)
    if best is None or (sure and best[0] < 0.8):
        return None
    return best[2]


class _CountingReader(io.RawIOBase):
    """A file that counts the bytes read through it, for progress reports."""

    def __init__(self, path: Path, read: BytesRead) -> None:
        self.file = path.open("rb", buffering=0)
        self.read_counter = read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = self.file.readinto(buffer) or 0
        self.read_counter.bytes += count
        return count

    def close(self) -> None:
        self.file.close()
        super().close()


def open_csv(
    path: Path, read: BytesRead, *, delimiter: str | None = None
) -> Table | tuple[int, str]:
    """A CSV or TSV table, or (row, why) when it has no usable header."""
    with path.open("rb") as f:
        head = f.read(SNIFF_BYTES)
    delimiter = delimiter or sniff_delimiter(head, sure=False) or ","
    if csv.field_size_limit() < MAX_CELL_BYTES:
        csv.field_size_limit(MAX_CELL_BYTES)  # the default (128 KiB) is below a long answer
    text = io.TextIOWrapper(
        io.BufferedReader(_CountingReader(path, read), 1024 * 1024),
        encoding="utf-8-sig",
        errors="surrogateescape",
        newline="",
    )
    rows = _csv_rows(csv.reader(text, delimiter=delimiter, strict=True))
    header: Header | None = None
    for row, cells in rows:
        if isinstance(cells, str):
            text.close()
            return row, cells
        if not blank_row(cells):
            header = Header(cells, row, delimiter)
            break
    if header is None:
        text.close()
        return 1, "the file has only blank lines: there are no records"
    if problem := header.problem():
        text.close()
        return header.row, problem
    return Table("csv", header.columns, _csv_records(rows, header, text))


def _csv_rows(reader: Any) -> Iterator[tuple[int, list[str] | str]]:
    """(row, cells) or (row, why the row cannot be read); a row as a spreadsheet counts it."""
    row = 0
    while True:
        row += 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield row, _csv_error(str(exc))
            continue
        yield row, cells


def _csv_error(message: str) -> str:
    if "unexpected end of data" in message:
        return (
            'a cell that starts with a double quote `"` is never closed, so the rest of the file '
            "ran into it: close the quote, or remove it"
        )
    if "expected after" in message:
        return (
            "a quoted cell has more text after its closing quote: put the quotes around the "
            'whole cell, and write a quote inside a cell as two quotes ""'
        )
    if "field larger than field limit" in message:
        return f"a cell is longer than {MAX_CELL_BYTES // (1024 * 1024)} MB, too long for a record"
    return f"this row cannot be read as CSV ({message})"


def _csv_records(
    rows: Iterator[tuple[int, list[str] | str]], header: Header, text: io.TextIOWrapper
) -> Iterator[Item]:
    data_rows = 0
    try:
        for row, cells in rows:
            if isinstance(cells, str):
                data_rows += 1
                yield Unreadable(row, cells, cells.startswith("a cell that starts with"))
                continue
            if blank_row(cells):
                continue
            data_rows += 1
            # a file saved with Windows line endings has them inside quoted cells too
            cells = [cell.replace("\r\n", "\n") if "\r" in cell else cell for cell in cells]
            joined = (header.delimiter or ",").join(cells)
            if not joined.isascii() and (bad := _NOT_UTF8.search(joined)):
                raw = joined.encode("utf-8", "surrogateescape")
                offset = len(joined[: bad.start()].encode("utf-8", "surrogateescape"))
                yield Unreadable(row, not_utf8(raw, offset, unit="row"))
                continue
            yield header.record(cells, row, exact=True)
    finally:
        text.close()
    if not data_rows:
        yield no_data_rows(header)
