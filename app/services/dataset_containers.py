"""Reading uploaded dataset files: bytes in, records with the line (or row) each starts on out.

The container is decided by content: a zip is an Excel workbook, `[` starts a JSON array, `{` a
JSONL file; anything else is read as CSV when its name says so or when it looks like a table
(`dataset_tabular`). Every container is streamed, so memory stays flat whatever the file size:
JSONL line by line, a JSON array element by element through a sliding window of text, tables
row by row. Problems that stop a value from being read at all (encoding, syntax, layout) come
out as `Unreadable`, located by line and said in words a person can act on.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from app.services import dataset_encoding
from app.services.dataset_encoding import BOM, not_utf8

HEAD_BYTES = 8192
# One record (a JSONL line, a JSON array element, a table cell) may be at most this long. A
# longer one is reported without ever being held whole in memory.
MAX_RECORD_BYTES = 16 * 1024 * 1024
READ_CHUNK = 1024 * 1024

_DECODER = json.JSONDecoder()
_WHITESPACE = re.compile(r"[ \t\r\n]*")
# Typed by Chinese input methods where JSON needs ASCII; naming them saves a long hunt.
_FULL_WIDTH = {
    "\uff0c": ",",  # fullwidth comma
    "\uff1a": ":",  # fullwidth colon
    "\u201c": '"',  # left double quotation mark
    "\u201d": '"',  # right double quotation mark
    "\u2018": '"',  # left single quotation mark
    "\u2019": '"',  # right single quotation mark
    "\uff3b": "[",  # fullwidth brackets
    "\uff3d": "]",
    "\uff5b": "{",  # fullwidth braces
    "\uff5d": "}",
    "\u3000": " ",  # ideographic space
}

_NOT_JSON_WORDS = (("True", "true"), ("False", "false"), ("None", "null"), ("undefined", "null"))

TOO_DEEP = (
    "the JSON here is nested too deeply (thousands of brackets) to be a training record: "
    "check that the file is not damaged"
)
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
    from app.services import dataset_tabular  # it builds on this module's record types

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
        return Source("json", _json_array(path, read), read=read)
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


def size_in_words(count: int) -> str:
    """A byte count as a person reads it: "100 MB", "1.5 MB", "300 bytes"."""
    mb = count / (1024 * 1024)
    if mb >= 10:
        return f"{mb:.0f} MB"
    if mb >= 1:
        return f"{mb:.1f} MB"
    return f"{count:,} bytes"


def overlong(size: int) -> str:
    return (
        f"this line is {size_in_words(size)} long; a record may be at most "
        f"{size_in_words(MAX_RECORD_BYTES)}: check that the file has one record per line"
    )


# --- JSON syntax errors in words ---------------------------------------------------------


def syntax_message(exc: json.JSONDecodeError) -> str:
    """The decoder's complaint in words a person can act on, with the column."""
    where = f"invalid JSON at column {exc.colno}"
    doc, pos, msg = exc.doc, exc.pos, exc.msg
    char = doc[pos] if pos < len(doc) else ""
    at_end = not doc[pos:].strip()
    if char in _FULL_WIDTH and not msg.startswith(("Unterminated", "Invalid")):
        return (
            f"{where}: `{char}` is a full-width (Chinese) character; outside of text values JSON "
            f"needs the plain `{_FULL_WIDTH[char]}`"
        )
    if msg.startswith(("Expecting ',' delimiter", "Expecting ':' delimiter")) and at_end:
        explain = "the record ends too early: it is cut off, or it continues on the next line"
    elif msg.startswith("Expecting ',' delimiter"):
        explain = (
            "a comma is missing between two items, or a text value contains a double quote "
            'that is not escaped (write it as \\")'
        )
    elif msg.startswith("Expecting ':' delimiter"):
        explain = "a `:` is missing after a field name"
    elif msg.startswith(("Expecting property name", "Expecting value", "Illegal trailing comma")):
        explain = _explain_missing(doc, pos, char, at_end)
    elif msg.startswith("Unterminated string"):
        explain = "the text value that starts here is not closed with a double quote"
    elif msg.startswith("Invalid control character"):
        explain = (
            "a text value contains a raw line break, tab or other control character: "
            "write a line break as \\n and a tab as \\t"
        )
    elif msg.startswith("Invalid \\"):
        explain = (
            "a backslash starts an invalid escape: write a backslash itself as \\\\ "
            "(for example in Windows paths)"
        )
    elif msg.startswith("Extra data"):
        explain = (
            "there is more after the end of the record; "
            "each line of a .jsonl file holds exactly one record"
        )
        if char == ",":
            explain += ": remove the comma at the end of the line"
    else:
        explain = msg
    return f"{where}: {explain}"


def _explain_missing(doc: str, pos: int, char: str, at_end: bool) -> str:
    if at_end:
        return "the record ends too early: it is cut off, or it continues on the next line"
    if char in "]}":
        return f"there is a comma right before `{char}`: remove the comma after the last item"
    if char == "'":
        return "text and field names need double quotes \", not single quotes '"
    for word, fix in _NOT_JSON_WORDS:
        if doc.startswith(word, pos):
            return f"`{word}` is not JSON: write `{fix}`"
    if char in ",":
        return "a value is missing before this comma"
    return (
        "a value is expected here: text in double quotes, a number, true, false, null, "
        "[ … ] or { … }"
    )


def _column(text: str, pos: int) -> int:
    return pos - text.rfind("\n", 0, pos)


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
        text = _JsonText(f, BytesRead())
        try:
            text.skip()
            value = text.value()
            last_line = text.line_at(text.pos - 1)
            text.skip()
            more = text.peek() != ""
        except (json.JSONDecodeError, RecursionError, _TooLong, _NotText):
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


# --- JSON array ---------------------------------------------------------------------------


class _TooLong(Exception):
    pass


class _NotText(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


class _JsonText:
    """A UTF-8 file as a sliding window of text, to read JSON values one at a time.

    Only the value being read (and a chunk around it) is held, whatever the file size, even
    for a minified array on a single line. Line numbers and columns stay those of the file.
    """

    def __init__(self, f: BinaryIO, read: BytesRead) -> None:
        self.f = f
        self.read = read
        self.buf = ""
        self.pos = 0
        self.eof = False
        self._pending = b""  # the start of a character cut by the chunk boundary
        self._started = False
        self._newlines = 0  # in all text decoded so far, to locate an encoding error
        self._base_line = 1  # line of buf[0]
        self._base_column = 0  # characters of that line before buf[0]
        self._mark = (0, 1)  # (pos, line): a known line, so counting moves only forward

    def _more(self, want: int = READ_CHUNK) -> bool:
        """Append at least `want` bytes of text to the window; False once the file is done."""
        if self.eof:
            return False
        raw = self.f.read(max(want, READ_CHUNK))
        self.read.bytes += len(raw)
        data = self._pending + raw
        try:
            text, used = codecs.utf_8_decode(data, "strict", not raw)
        except UnicodeDecodeError as exc:
            raise self._not_text(data, exc.start) from None
        self._pending = data[used:]
        if not self._started:
            text = text.removeprefix("\ufeff")
            self._started = True
        self._newlines += text.count("\n")
        self._compact()
        self.buf += text
        self.eof = not raw
        return True

    def _compact(self) -> None:
        """Drop the text before `pos`, keeping line numbers and columns right."""
        if self.pos < READ_CHUNK:
            return
        cut = self.pos
        line = self.line_at(cut)
        last = self.buf.rfind("\n", 0, cut)
        self._base_column = cut - last - 1 if last >= 0 else self._base_column + cut
        self._base_line = line
        self.buf = self.buf[cut:]
        self.pos = 0
        self._mark = (0, line)

    def _not_text(self, data: bytes, offset: int) -> _NotText:
        line = self._newlines + data.count(b"\n", 0, offset) + 1
        start = data.rfind(b"\n", 0, offset) + 1
        end = data.find(b"\n", offset)
        raw = data[start : end if end >= 0 else len(data)]
        return _NotText(line, not_utf8(raw, offset - start, complete=end >= 0, file=True))

    def line_at(self, pos: int) -> int:
        mark, line = self._mark
        if pos < mark:
            mark, line = 0, self._base_line
        line += self.buf.count("\n", mark, pos)
        self._mark = (pos, line)
        return line

    def column_at(self, pos: int) -> int:
        last = self.buf.rfind("\n", 0, pos)
        return pos - last if last >= 0 else self._base_column + pos + 1

    def skip(self) -> None:
        """Move past whitespace, reading on as needed."""
        while True:
            match = _WHITESPACE.match(self.buf, self.pos)
            self.pos = match.end() if match else self.pos
            if self.pos < len(self.buf) or not self._more():
                return

    def peek(self) -> str:
        """The character at `pos` ("" at the end of the file)."""
        while self.pos >= len(self.buf):
            if not self._more():
                return ""
        return self.buf[self.pos]

    def value(self) -> Any:
        """Decode the JSON value at `pos` and move past it.

        The window grows until the value is whole: an error near the end of the window (or an
        unterminated string) may only mean the value goes on in the next chunk.
        """
        while True:
            start = self.pos
            try:
                value, end = _DECODER.raw_decode(self.buf, start)
            except json.JSONDecodeError as exc:
                cut = exc.pos >= len(self.buf) - 64 or exc.msg.startswith("Unterminated string")
                if self.eof or not cut:
                    raise self._located(exc) from None
            else:
                # a number at the end of the window may go on in the next chunk
                if end < len(self.buf) or self.eof:
                    self.pos = end
                    return value
            if len(self.buf) - start > MAX_RECORD_BYTES:
                raise _TooLong
            self._more(len(self.buf) - start)

    def _located(self, exc: json.JSONDecodeError) -> json.JSONDecodeError:
        """The decoder's error with the line and column of the file, not of the window."""
        located = json.JSONDecodeError(exc.msg, exc.doc, exc.pos)
        located.lineno = self.line_at(exc.pos)
        located.colno = self.column_at(exc.pos)
        return located


def _json_array(path: Path, read: BytesRead) -> Iterator[Item]:
    with path.open("rb") as f:
        text = _JsonText(f, read)
        try:
            yield from _array_items(text)
        except _NotText as exc:
            yield Unreadable(exc.line, exc.message, True)


def _array_items(text: _JsonText) -> Iterator[Item]:
    text.skip()
    opening = text.line_at(text.pos)
    text.pos += 1  # the "[" that open_values saw
    text.skip()
    if text.peek() == "]":
        text.pos += 1
        yield _after_array(text) or Unreadable(
            opening, "the list is empty: there are no records", True
        )
        return
    while True:
        if text.peek() == "":
            yield Unreadable(
                text.line_at(text.pos), "the file ends before the list is closed: add `]`", True
            )
            return
        line = text.line_at(text.pos)
        try:
            value = text.value()
        except json.JSONDecodeError as exc:
            yield Unreadable(exc.lineno, syntax_message(exc), True)
            return
        except RecursionError:
            yield Unreadable(line, TOO_DEEP, True)
            return
        except _TooLong:
            yield Unreadable(
                line,
                (
                    f"the record that starts on this line is longer than "
                    f"{size_in_words(MAX_RECORD_BYTES)}, too long for one training record: check "
                    "that the file is not damaged"
                ),
                True,
            )
            return
        yield Parsed(line, value)
        end = text.line_at(text.pos - 1)
        text.skip()
        char = text.peek()
        if char == ",":
            text.pos += 1
            text.skip()
        elif char == "]":
            text.pos += 1
            if problem := _after_array(text):
                yield problem
            return
        elif char:
            yield Unreadable(
                text.line_at(text.pos),
                (
                    f"invalid JSON at column {text.column_at(text.pos)}: a comma is missing "
                    f"between this record and the one before it (which ends on line {end})"
                ),
                True,
            )
            return


def _after_array(text: _JsonText) -> Unreadable | None:
    text.skip()
    if text.peek():
        return Unreadable(
            text.line_at(text.pos),
            (
                f"invalid JSON at column {text.column_at(text.pos)}: there is more after the `]` "
                "that closes the list; a .json file holds exactly one list of records"
            ),
            True,
        )
    return None
