"""The first sheet of an Excel workbook as a table: cells as the text a person sees in Excel.

Rows are streamed with openpyxl's read-only reader, which cannot see merged cells; those are
found by scanning the sheet's XML for `mergeCell`. Nothing is unpacked before the sizes the zip
lists pass `dataset_zip_limits` (a small upload may be a zip bomb).
"""

from __future__ import annotations

import datetime as dt
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from app.datasets.items import BytesRead, Item, Unreadable
from app.datasets.table_rows import Header, Table, blank_row, column_index, no_data_rows
from app.datasets.zip_limits import unpacking_problem

_MERGE = re.compile(rb"<(?:\w+:)?mergeCell\s[^>]*?ref=\"([A-Za-z]+)(\d+)(?::([A-Za-z]+)(\d+))?\"")
NOT_A_WORKBOOK = (
    "this file is named .xlsx but is not an Excel workbook (an .xlsx file is a zip archive, and "
    "this one is not): open it in Excel or LibreOffice and save it as .xlsx, or export it as CSV"
)
DAMAGED = (
    "this Excel file is damaged or is not really an .xlsx workbook: open it in Excel (or "
    "LibreOffice) and save it again as .xlsx, or export the sheet as CSV"
)


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
    # Before openpyxl inflates anything: the sizes the zip lists bound what it can unpack.
    if problem := unpacking_problem(infos):
        return 1, problem
    import openpyxl  # imported here: slow to import, and only workbooks need it

    handle = path.open("rb")
    try:
        # A file object, not the path: openpyxl refuses a path that does not end in .xlsx,
        # and uploads are stored under names of tunelab's own.
        workbook = openpyxl.load_workbook(handle, read_only=True, data_only=True)
    except Exception:  # openpyxl raises many kinds on a damaged file; all mean "damaged"
        handle.close()
        return 1, DAMAGED
    book = _Book(workbook, handle)
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
    header: Header | None = None
    for row, values in cells:
        if isinstance(values, str):
            book.close()
            return row, values
        if not blank_row(values):
            header = Header(values, row, None)
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


class _Book:
    """A read-only workbook and the file it reads from, closed together."""

    def __init__(self, workbook: Any, handle: BinaryIO) -> None:
        self.workbook = workbook
        self.handle = handle
        self.worksheets = workbook.worksheets

    def close(self) -> None:
        self.workbook.close()
        self.handle.close()


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
    header: Header,
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
            if blank_row(cells):
                continue
            data_rows += 1
            yield header.record(cells, row, exact=False)
    finally:
        book.close()
        read.bytes = size
    if not data_rows:
        yield no_data_rows(header)


def _merged_cells(path: Path, sheet_path: str | None, header: Header) -> list[Item]:
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


def _merge_error(match: re.Match[bytes], header: Header) -> Item:
    first_col, first_row, last_col, last_row = (
        group.decode() if group else None for group in match.groups()
    )
    assert first_col is not None and first_row is not None
    cells = (
        f"{first_col}{first_row}:{last_col}{last_row}" if last_col else f"{first_col}{first_row}"
    )
    index = column_index(first_col)
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
