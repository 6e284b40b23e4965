"""Reading uploaded dataset files: bytes in, records with the line (or row) each starts on out.

The container is decided by content: a zip is an Excel workbook, `[` starts a JSON array, `{` a
JSONL file; anything else is read as CSV when its name says so or when it looks like a table
(`dataset_tabular`). Every container is streamed, so memory stays flat whatever the file size:
JSONL line by line, a JSON array element by element through a sliding window of text, tables
row by row. Problems that stop a value from being read at all (encoding, syntax, layout) come
out as `Unreadable`, located by line and said in words a person can act on.

Here: the choice of container, and JSONL lines (shared with the fast JSONL check in
`dataset_records_pass`). The readers of the others: `dataset_json_array`, `dataset_tabular`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from app.datasets import encoding as dataset_encoding
from app.datasets import tabular as dataset_tabular
from app.datasets.encoding import BOM, not_utf8
from app.datasets.items import BytesRead, Item, Parsed, Unreadable, size_in_words
from app.datasets.json_array import JsonText, NotText, TooLong, read_json_array
from app.datasets.json_syntax import TOO_DEEP, syntax_message

__all__ = [
    "HEAD_BYTES",
    "MAX_RECORD_BYTES",
    "NUL_BYTES",
    "OLD_EXCEL",
    "READ_CHUNK",
    "TOO_DEEP",
    "BytesRead",
    "Item",
    "Parsed",
    "Source",
    "Unreadable",
    "open_values",
    "overlong",
    "parse_line",
    "raw_lines",
    "read_values",
    "size_in_words",
    "skip_line",
    "syntax_message",
]

HEAD_BYTES = 8192
# One record (a JSONL line, a JSON array element, a table cell) may be at most this long. A
# longer one is reported without ever being held whole in memory.
MAX_RECORD_BYTES = 16 * 1024 * 1024
READ_CHUNK = 1024 * 1024

_DECODER = json.JSONDecoder()

NUL_BYTES = (
    "this line contains NUL bytes, which text never has: the file looks damaged; "
    "save it again as UTF-8 text"
)
_ZIP_MAGIC = b"PK\x03\x04"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # old Office files: .xls, .doc
OLD_EXCEL = (
    "this looks like an old Excel workbook (.xls), which cannot be read: open it in Excel or "
    "LibreOffice and save it as .xlsx or CSV (UTF-8)"
)


@dataclass
class Source:
    """An opened dataset file: its container, its records in order, and what else was noticed."""

    container: str | None  # "json" | "jsonl" | "csv" | "xlsx"; None when none fits
    items: Iterator[Item]
    columns: list[str] | None = None  # a table's header
    notes: list[str] = field(default_factory=list)  # warnings about the file itself
    read: BytesRead = field(default_factory=BytesRead)


def open_values(path: Path, *, filename: str | None = None) -> Source:
    """The container and records of `path`; `filename` (the name it was uploaded under, else the
    path's own) only matters for telling CSV from other text.

    When the file cannot be read as any container, the container is None and the items are one
    fatal `Unreadable` that says why.
    """
    suffix = Path(filename if filename is not None else path.name).suffix.lower()
    read = BytesRead()
    with path.open("rb") as f:
        head = f.read(HEAD_BYTES)
    if not head:
        return _unreadable(Unreadable(1, "the file is empty: upload a file with records", True))
    if head.startswith(_OLE_MAGIC):
        return _unreadable(Unreadable(1, OLD_EXCEL, True))
    if head.startswith(_ZIP_MAGIC):
        table = dataset_tabular.open_xlsx(path, read, named_xlsx=suffix in (".xlsx", ".xlsm"))
        if isinstance(table, dataset_tabular.Table):
            return Source("xlsx", table.rows, table.columns, table.notes, read)
        if table is not None:
            return _unreadable(Unreadable(*table, fatal=True), container="xlsx")
        # a zip that is not a workbook: said below as "a binary file"
    if suffix in (".xlsx", ".xlsm"):
        return _unreadable(Unreadable(1, dataset_tabular.NOT_A_WORKBOOK, True), container="xlsx")
    problem = dataset_encoding.sniff(head, whole=len(head) < HEAD_BYTES)
    if problem:
        return _unreadable(Unreadable(*problem, fatal=True))
    start, line = _start_of_content(path)
    if start.startswith(b"["):
        return Source(
            "json",
            read_json_array(path, read, chunk=READ_CHUNK, limit=MAX_RECORD_BYTES),
            read=read,
        )
    if start.startswith(b"{"):
        return Source("jsonl", _jsonl(path, read), read=read)
    if not start:
        return _unreadable(
            Unreadable(1, "the file has only blank lines: there are no records", True)
        )
    delimiter = "\t" if suffix == ".tsv" else None
    if suffix in (".csv", ".tsv") or (
        suffix not in (".json", ".jsonl") and dataset_tabular.sniff_delimiter(head) is not None
    ):
        table = dataset_tabular.open_csv(path, read, delimiter=delimiter)
        if isinstance(table, dataset_tabular.Table):
            return Source("csv", table.rows, table.columns, table.notes, read)
        return _unreadable(Unreadable(*table, fatal=True), container="csv")
    shown = start.decode("utf-8", errors="ignore").split("\n")[0].strip()
    shown = shown if len(shown) <= 30 else shown[:29] + "…"
    return _unreadable(
        Unreadable(
            line,
            (
                f"the file does not look like JSON, JSONL or CSV: it starts with `{shown}`. A .json "
                "file starts with `[` (a list of records), each line of a .jsonl file is one `{…}` "
                "record, and a .csv file starts with a header row of column names"
            ),
            True,
        )
    )


def read_values(path: Path, *, filename: str | None = None) -> tuple[str | None, Iterator[Item]]:
    """The container ("json", "jsonl", "csv", "xlsx" or None) and the file's records in order."""
    source = open_values(path, filename=filename)
    return source.container, source.items


def _unreadable(item: Unreadable, container: str | None = None) -> Source:
    return Source(container, iter([item]))


def _start_of_content(path: Path) -> tuple[bytes, int]:
    """The bytes from the first one that is not whitespace (b"" if none), and its line."""
    line = 1
    with path.open("rb") as f:
        chunk = f.read(64 * 1024).removeprefix(BOM)
        while chunk:
            stripped = chunk.lstrip(b" \t\r\n")
            line += chunk.count(b"\n", 0, len(chunk) - len(stripped))
            if stripped:
                return stripped[:200], line
            chunk = f.read(64 * 1024)
    return b"", line


def overlong(size: int) -> str:
    return (
        f"this line is {size_in_words(size)} long; a record may be at most "
        f"{size_in_words(MAX_RECORD_BYTES)}: check that the file has one record per line"
    )


# --- JSONL ----------------------------------------------------------------------------------


def parse_line(number: int, raw: bytes) -> Item | None:
    """One JSONL line read with the json module: its value, why it is unusable, or None if blank.

    The careful path: the fast validator hands a line here only when orjson refused it, so
    the person gets the same words whichever parser looked first.
    """
    raw = raw.rstrip(b"\r\n")
    if b"\0" in raw:
        return Unreadable(number, NUL_BYTES)
    # A byte order mark may also start a later line when files were concatenated.
    body = raw.removeprefix(BOM)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Unreadable(number, not_utf8(body, exc.start))
    if not text.strip():
        return None
    try:
        return Parsed(number, _DECODER.decode(text))
    except json.JSONDecodeError as exc:
        return Unreadable(number, syntax_message(exc))
    except RecursionError:
        return Unreadable(number, TOO_DEEP)


def raw_lines(f: BinaryIO, number: int = 0) -> Iterator[tuple[int, bytes] | Unreadable]:
    """The lines of `f` with their numbers (after `number`); an overlong line is skipped in
    pieces and reported, so it is never held whole."""
    limit = MAX_RECORD_BYTES
    while raw := f.readline(limit + 1):
        number += 1
        if len(raw) > limit and not raw.endswith(b"\n"):
            yield Unreadable(number, overlong(skip_line(f, len(raw))))
            continue
        yield number, raw


def skip_line(f: BinaryIO, size: int) -> int:
    """Read past the rest of a line whose first `size` bytes were read; return its length."""
    while True:
        piece = f.readline(READ_CHUNK)
        size += len(piece)
        if not piece or piece.endswith(b"\n"):
            return size - piece.endswith(b"\n")


def _jsonl(path: Path, read: BytesRead) -> Iterator[Item]:
    if spread := _spread_over_lines(path):
        yield spread
        return
    with path.open("rb") as f:
        for entry in raw_lines(f):
            if isinstance(entry, Unreadable):
                read.bytes = f.tell()
                yield entry
                continue
            read.bytes += len(entry[1])
            if item := parse_line(*entry):
                yield item


def _spread_over_lines(path: Path) -> Unreadable | None:
    """One error for a file that starts with a record pretty-printed over several lines.

    That is when the first line is cut off and the next is not a record of its own. A cut-off
    first line followed by whole records is just one damaged record, reported as such.
    """
    with path.open("rb") as f:
        head: list[tuple[int, str]] = []
        for entry in raw_lines(f):
            if isinstance(entry, Unreadable):
                return None
            number, raw = entry
            try:
                text = raw.removeprefix(BOM).decode("utf-8")
            except UnicodeDecodeError:
                return None
            if text.strip():
                head.append((number, text))
                if len(head) == 2:
                    break
    if len(head) < 2 or not _cut_off(head[0][1]):
        return None
    second = parse_line(head[1][0], head[1][1].encode())
    if isinstance(second, Parsed) and isinstance(second.value, dict):
        return None
    return _explain_spread_record(path, head[0][0])


def _cut_off(text: str) -> bool:
    """Whether the JSON in `text` is fine as far as it goes but stops before it is complete."""
    try:
        _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        return exc.msg.startswith("Unterminated string") or not exc.doc[exc.pos :].strip()
    except RecursionError:
        return False
    return False


def _explain_spread_record(path: Path, first_line: int) -> Unreadable:
    generic = Unreadable(
        first_line,
        (
            "the record that starts here continues over several lines, but in a .jsonl file every "
            "record must be on one line: put each record on one line, or upload a JSON array "
            "(`[` before the first record, a comma between records, `]` after the last)"
        ),
        True,
    )
    with path.open("rb") as f:
        text = JsonText(f, BytesRead(), chunk=READ_CHUNK, limit=MAX_RECORD_BYTES)
        try:
            text.skip()
            value = text.value()
            last_line = text.line_at(text.pos - 1)
            text.skip()
            more = text.peek() != ""
        except (json.JSONDecodeError, RecursionError, TooLong, NotText):
            return generic
    if more:
        return Unreadable(
            first_line,
            (
                f"each record is spread over several lines (the first one spans lines "
                f"{first_line} to {last_line}), but in a .jsonl file every record must be on one line: "
                "put each record on one line, or make the file a JSON array (`[` before the first "
                "record, a comma between records, `]` after the last)"
            ),
            True,
        )
    lists = []
    if isinstance(value, dict):
        lists = [
            k for k, v in value.items() if isinstance(v, list) and v and isinstance(v[0], dict)
        ]
    hint = f" (the records seem to be the list under `{lists[0]}`)" if len(lists) == 1 else ""
    return Unreadable(
        first_line,
        (
            f"the file is a single JSON object (lines {first_line} to {last_line}), not a list of "
            f"records{hint}: upload a JSON array [{{…}}, {{…}}], even for one record, or JSONL with "
            "one record per line"
        ),
        True,
    )
