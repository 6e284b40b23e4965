"""A table's header row, and the records ``{column: text}`` its rows become (CSV and XLSX).

Rows are numbered as a spreadsheet shows them: the header is row 1, a cell spanning several
lines is still one row.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from app.datasets.items import Item, Parsed, Unreadable

_DELIMITER_NAMES = {",": "comma `,`", ";": "semicolon `;`", "\t": "tab", "|": "bar `|`"}


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


def column_index(letters: str) -> int:
    index = 0
    for char in letters.upper():
        index = index * 26 + ord(char) - ord("A") + 1
    return index - 1


class Header:
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


def blank_row(cells: list[str]) -> bool:
    return not any(cell.strip() for cell in cells)


def no_data_rows(header: Header) -> Item:
    return Unreadable(
        header.row + 1,
        f"the table has a header (row {header.row}) but no rows of data below it",
        True,
    )
