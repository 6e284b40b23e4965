"""Tables as training data: CSV / TSV files and the first sheet of an Excel workbook.

A table has a header row of column names; every row below it becomes a record ``{column:
text}`` numbered as a spreadsheet shows it (the header is row 1, a cell spanning several lines
is still one row). Cells are always text: Excel numbers and dates are written the way a person
reads them. Rows are streamed, so a large table never sits in memory; merged cells, which
openpyxl's streaming reader cannot see, are found by scanning the sheet's XML for `mergeCell`.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.services.dataset_containers import BytesRead, Item, Parsed, Unreadable
from app.services.dataset_encoding import BOM, not_utf8

# A workbook is a zip of XML; refuse one that would unpack to more than this (a zip bomb, or a
# sheet far beyond any training set).
MAX_UNPACKED_BYTES = 4 * 1024 * 1024 * 1024
MAX_CELL_BYTES = 16 * 1024 * 1024
SNIFF_BYTES = 64 * 1024
DELIMITERS = (",", ";", "\t", "|")
_DELIMITER_NAMES = {",": "comma `,`", ";": "semicolon `;`", "\t": "tab", "|": "bar `|`"}
_NOT_UTF8 = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, kept by surrogateescape
_MERGE = re.compile(rb"<(?:\w+:)?mergeCell\s[^>]*?ref=\"([A-Za-z]+)(\d+)(?::([A-Za-z]+)(\d+))?\"")
NOT_A_WORKBOOK = (
    "this file is named .xlsx but is not an Excel workbook (an .xlsx file is a zip archive, and "
    "this one is not): open it in Excel or LibreOffice and save it as .xlsx, or export it as CSV"
)
DAMAGED = (
    "this Excel file is damaged or is not really an .xlsx workbook: open it in Excel (or "
    "LibreOffice) and save it again as .xlsx, or export the sheet as CSV"
)


@dataclass
class Table:
    container: str  # "csv" | "xlsx"
    columns: list[str]
    rows: Iterator[Item]
    notes: list[str] = field(default_factory=list)


def column_letter(index: int) -> str:
    """Spreadsheet name of a 0-based column index: 0 -> A, 27 -> AB."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


def _column_index(letters: str) -> int:
    index = 0
    for char in letters.upper():
        index = index * 26 + ord(char) - ord("A") + 1
    return index - 1


class _Header:
    """Column names of a header row; checks the rows below against it."""

    def __init__(self, cells: list[str], row: int, delimiter: str | None) -> None:
        names = [cell.strip() for cell in cells]
        while names and not names[-1]:
            names.pop()
        self.names = names
        self.row = row
        self.delimiter = delimiter
        self.columns = [name for name in names if name]

    def problem(self) -> str | None:
        seen: dict[str, int] = {}
        for i, name in enumerate(self.names):
            if not name:
                continue
            if name in seen:
                return (
                    f"two columns are named `{name}` (columns {column_letter(seen[name])} and "
                    f"{column_letter(i)}): give each column its own name"
                )
            seen[name] = i
        if not self.columns:
            return "the header row has no column names"
        return None

    def record(self, cells: list[str], row: int, *, exact: bool) -> Item:
        """The row as {column: text}, or why it does not fit the header.

        `exact`: a CSV row must have as many cells as the header (extra empty cells, left by a
        trailing delimiter, are fine); a sheet row only must not have values in unnamed columns.
        """
        width = len(self.names)
        if exact and len(cells) < width:
            return Unreadable(
                row,
                (
                    f"this row has {len(cells)} cell{'' if len(cells) == 1 else 's'} but the header "
                    f"(row {self.row}) has {width} columns: a value is missing, or a cell holds a "
                    "line break without quotes around it"
                ),
            )
        for i in range(width, len(cells)):
            if cells[i].strip():
                if exact:
                    return Unreadable(
                        row,
                        (
                            f"this row has {len(cells)} cells but the header (row {self.row}) has "
                            f"{width} columns: a value probably contains the "
                            f"{_DELIMITER_NAMES.get(self.delimiter or ',', 'delimiter')} without "
                            'quotes around it (write "…" around such a value)'
                        ),
                    )
                return Unreadable(
                    row,
                    (
                        f"column {column_letter(i)} has a value in this row but no name in the "
                        f"header (row {self.row}): name the column or delete the value"
                    ),
                )
        values: dict[str, str] = {}
        for i, name in enumerate(self.names):
            cell = cells[i] if i < len(cells) else ""
            if name:
                values[name] = cell
            elif cell.strip():
                return Unreadable(
                    row,
                    (
                        f"column {column_letter(i)} has a value in this row but no name in the "
                        f"header (row {self.row}): name the column or delete the value"
                    ),
                )
        return Parsed(row, values)


def _blank_row(cells: list[str]) -> bool:
    return not any(cell.strip() for cell in cells)


# --- CSV ------------------------------------------------------------------------------------


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
                if not _blank_row(cells):
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
    header: _Header | None = None
    for row, cells in rows:
        if isinstance(cells, str):
            text.close()
            return row, cells
        if not _blank_row(cells):
            header = _Header(cells, row, delimiter)
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
    rows: Iterator[tuple[int, list[str] | str]], header: _Header, text: io.TextIOWrapper
) -> Iterator[Item]:
    data_rows = 0
    try:
        for row, cells in rows:
            if isinstance(cells, str):
                data_rows += 1
                yield Unreadable(row, cells, cells.startswith("a cell that starts with"))
                continue
            if _blank_row(cells):
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
        yield _no_data_rows(header)


def _no_data_rows(header: _Header) -> Item:
    return Unreadable(
        header.row + 1,
        f"the table has a header (row {header.row}) but no rows of data below it",
        True,
    )


# --- XLSX -----------------------------------------------------------------------------------


def open_xlsx(path: Path, read: BytesRead, *, named_xlsx: bool) -> Table | tuple[int, str] | None:
    """The first sheet of a workbook, (row, why) when it cannot be read, or None when the zip
    is no workbook at all and its name does not claim one (the caller calls it binary)."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return (1, DAMAGED) if named_xlsx else None
    if not any(info.filename == "xl/workbook.xml" for info in infos):
        if not named_xlsx:
            return None
        return 1, "this is a zip archive, not an Excel workbook: upload the .xlsx file itself"
    unpacked = sum(info.file_size for info in infos)
    if unpacked > MAX_UNPACKED_BYTES:
        return (
            1,
            f"this workbook unpacks to {unpacked / 1024**3:.0f} GB of sheets, far more than a "
            "training set needs: upload a smaller one, or export the sheet as CSV",
        )
    import openpyxl  # imported here: slow to import, and only workbooks need it

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception:  # openpyxl raises many kinds on a damaged file; all mean "damaged"
        return 1, DAMAGED
    if not book.worksheets:
        book.close()
        return 1, "the workbook has no sheets"
    sheet = book.worksheets[0]
    notes = []
    if len(book.worksheets) > 1:
        notes.append(
            f"only the first sheet (`{sheet.title}`) was read; the workbook has "
            f"{len(book.worksheets)} sheets"
        )
    size = path.stat().st_size
    cells = _sheet_rows(sheet, read, size)
    header: _Header | None = None
    for row, values in cells:
        if isinstance(values, str):
            book.close()
            return row, values
        if not _blank_row(values):
            header = _Header(values, row, None)
            break
    if header is None:
        book.close()
        return 1, f"the first sheet (`{sheet.title}`) is empty"
    if problem := header.problem():
        book.close()
        return header.row, problem
    merged = _merged_cells(path, getattr(sheet, "_worksheet_path", None), header)
    return Table(
        "xlsx", header.columns, _xlsx_records(merged, cells, header, book, read, size), notes
    )


def _sheet_rows(sheet: Any, read: BytesRead, size: int) -> Iterator[tuple[int, list[str] | str]]:
    rows = iter(sheet.iter_rows())
    estimate = sheet.max_row or 0
    row = 0
    while True:
        row += 1
        try:
            cells = next(rows)
        except StopIteration:
            return
        except Exception:  # a damaged sheet can fail anywhere in its XML
            yield row, f"the sheet cannot be read from this row on: {DAMAGED}"
            return
        if estimate:
            read.bytes = min(size, size * row // estimate)
        yield row, [_cell_text(cell) for cell in cells]


def _xlsx_records(
    merged: list[Item],
    rows: Iterator[tuple[int, list[str] | str]],
    header: _Header,
    book: Any,
    read: BytesRead,
    size: int,
) -> Iterator[Item]:
    yield from merged
    data_rows = 0
    try:
        for row, cells in rows:
            if isinstance(cells, str):
                yield Unreadable(row, cells, True)
                return
            if _blank_row(cells):
                continue
            data_rows += 1
            yield header.record(cells, row, exact=False)
    finally:
        book.close()
        read.bytes = size
    if not data_rows:
        yield _no_data_rows(header)


def _merged_cells(path: Path, sheet_path: str | None, header: _Header) -> list[Item]:
    """One error per merged range of the sheet, found by streaming its XML.

    openpyxl's read-only sheets do not expose merged cells. A merge only keeps the value of its
    top-left cell, so the other rows it covers would silently lose theirs.
    """
    if not sheet_path:
        return []
    found: list[Item] = []
    try:
        with zipfile.ZipFile(path) as archive, archive.open(sheet_path.lstrip("/")) as xml:
            tail = b""
            while chunk := xml.read(1024 * 1024):
                data = tail + chunk
                last = 0
                for match in _MERGE.finditer(data):
                    found.append(_merge_error(match, header))
                    last = match.end()
                # keep an unfinished tag for the next chunk, but never one matched already
                tail = data[max(last, len(data) - 512) :]
    except (KeyError, zipfile.BadZipFile, OSError, EOFError):
        return found
    return found


def _merge_error(match: re.Match[bytes], header: _Header) -> Item:
    first_col, first_row, last_col, last_row = (
        group.decode() if group else None for group in match.groups()
    )
    assert first_col is not None and first_row is not None
    cells = (
        f"{first_col}{first_row}:{last_col}{last_row}" if last_col else f"{first_col}{first_row}"
    )
    index = _column_index(first_col)
    name = header.names[index] if index < len(header.names) and header.names[index] else None
    return Unreadable(
        int(first_row),
        f"cells {cells} are merged: unmerge them and fill in the value on each row",
        True,
        name,
    )


def _cell_text(cell: Any) -> str:
    """A cell as the text a person sees in Excel (roughly: no thousands separators)."""
    value = getattr(cell, "value", None)
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, dt.datetime):
        if value.time() == dt.time(0):
            return value.date().isoformat()
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return str(value)
    if isinstance(value, float):
        if "%" in (getattr(cell, "number_format", None) or ""):
            return f"{value * 100:.10g}%"
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.15g}"  # 0.1 + 0.2 reads as 0.3, as Excel shows it
    return str(value)
