"""Reading uploaded dataset files: bytes in, JSON values with the line each one starts on out.

The container (a JSON array or JSONL) is decided by content, never by the file name. JSONL is
read line by line, so a large file is never held in memory; a JSON array is decoded whole (it is
bounded by the upload cap) but element by element, so each record keeps its own line number.
Problems that stop a value from being read at all (encoding, syntax) come out as `Unreadable`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from itertools import chain, islice
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from app.services import dataset_encoding
from app.services.dataset_encoding import BOM, not_utf8

HEAD_BYTES = 8192
MAX_LINE_BYTES = 64 * 1024 * 1024
MAX_JSON_BYTES = 256 * 1024 * 1024

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


class Parsed(NamedTuple):
    line: int
    value: Any


class Unreadable(NamedTuple):
    line: int
    message: str


Item = Parsed | Unreadable


def read_values(path: Path) -> tuple[str | None, Iterator[Item]]:
    """The container ("json", "jsonl" or None) and the file's values in order.

    When the file cannot be read as either container, the container is None and the iterator
    yields one `Unreadable` that says why.
    """
    with path.open("rb") as f:
        head = f.read(HEAD_BYTES)
    if not head:
        return None, iter([Unreadable(1, "the file is empty: upload a file with records")])
    problem = dataset_encoding.sniff(head, whole=len(head) < HEAD_BYTES)
    if problem:
        return None, iter([Unreadable(*problem)])
    start, line = _start_of_content(path)
    if start.startswith(b"["):
        return "json", _json_array(path)
    if start.startswith(b"{"):
        return "jsonl", _jsonl(path)
    if not start:
        return None, iter([Unreadable(1, "the file has only blank lines: there are no records")])
    shown = start.decode("utf-8", errors="ignore").split("\n")[0].strip()
    shown = shown if len(shown) <= 30 else shown[:29] + "…"
    return None, iter(
        [
            Unreadable(
                line,
                (
                    f"the file does not look like JSON or JSONL: it starts with `{shown}`. A .json file "
                    "starts with `[` (a list of records) and each line of a .jsonl file is one `{…}` record"
                ),
            )
        ]
    )


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


def _jsonl(path: Path) -> Iterator[Item]:
    with path.open("rb") as f:
        lines = _text_lines(f)
        head = list(islice(lines, 2))
        if _spread_over_lines(head):
            first = head[0]
            assert isinstance(first, tuple)
            yield _explain_spread_record(path, first[0])
            return
        for item in chain(head, lines):
            yield item if isinstance(item, Unreadable) else _parse_line(*item)


def _text_lines(f: BinaryIO) -> Iterator[tuple[int, str] | Unreadable]:
    """Non-blank lines as text with their 1-based numbers, or why a line cannot be read."""
    number = 0
    while raw := f.readline(MAX_LINE_BYTES + 1):
        number += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):  # skip the rest without holding it
                raw = f.readline(1024 * 1024)
            yield Unreadable(
                number,
                (
                    f"this line is longer than {_size(MAX_LINE_BYTES)}, too long for one "
                    "record: check that the file has one record per line"
                ),
            )
            continue
        raw = raw.rstrip(b"\r\n")
        if b"\0" in raw:
            yield Unreadable(
                number,
                (
                    "this line contains NUL bytes, which text never has: the file looks damaged; "
                    "save it again as UTF-8 text"
                ),
            )
            continue
        try:
            # A byte order mark may also start a later line when files were concatenated.
            text = raw.removeprefix(BOM).decode("utf-8")
        except UnicodeDecodeError as exc:
            yield Unreadable(number, not_utf8(raw, exc.start))
            continue
        if text.strip():
            yield number, text


def _parse_line(number: int, text: str) -> Item:
    try:
        return Parsed(number, _DECODER.decode(text))
    except json.JSONDecodeError as exc:
        return Unreadable(number, syntax_message(exc))
    except RecursionError:
        return Unreadable(number, TOO_DEEP)


def _spread_over_lines(head: list[tuple[int, str] | Unreadable]) -> bool:
    """Whether the file starts with a record pretty-printed over several lines.

    The first line is cut off and the next is not a record of its own. A cut-off first line
    followed by whole records is just one damaged record, reported as such.
    """
    if len(head) < 2 or isinstance(head[0], Unreadable) or isinstance(head[1], Unreadable):
        return False
    if not _cut_off(head[0][1]):
        return False
    second = _parse_line(*head[1])
    return not (isinstance(second, Parsed) and isinstance(second.value, dict))


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
    )
    if path.stat().st_size > MAX_JSON_BYTES:
        return generic
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
    try:
        value, end = _DECODER.raw_decode(text, _skip(text, 0))
    except (json.JSONDecodeError, RecursionError):
        return generic
    last_line = text.count("\n", 0, end) + 1
    if _skip(text, end) < len(text):
        return Unreadable(
            first_line,
            (
                f"each record is spread over several lines (the first one spans lines "
                f"{first_line} to {last_line}), but in a .jsonl file every record must be on one line: "
                "put each record on one line, or make the file a JSON array (`[` before the first "
                "record, a comma between records, `]` after the last)"
            ),
        )
    lists = [k for k, v in value.items() if isinstance(v, list) and v and isinstance(v[0], dict)]
    hint = f" (the records seem to be the list under `{lists[0]}`)" if len(lists) == 1 else ""
    return Unreadable(
        first_line,
        (
            f"the file is a single JSON object (lines {first_line} to {last_line}), not a list of "
            f"records{hint}: upload a JSON array [{{…}}, {{…}}], even for one record, or JSONL with "
            "one record per line"
        ),
    )


# --- JSON array ---------------------------------------------------------------------------


def _json_array(path: Path) -> Iterator[Item]:
    if path.stat().st_size > MAX_JSON_BYTES:
        yield Unreadable(
            1,
            (
                f"this JSON file is larger than {_size(MAX_JSON_BYTES)}: upload large "
                "datasets as JSONL (one record per line), which is read line by line"
            ),
        )
        return
    text = _read_text(path)
    if isinstance(text, Unreadable):
        yield text
        return

    lines = _LineCounter(text)
    opening = _skip(text, 0)  # the "[" that read_values saw
    pos = _skip(text, opening + 1)
    if text.startswith("]", pos):
        yield _after_array(text, pos + 1, lines) or Unreadable(
            lines.at(opening), "the list is empty: there are no records"
        )
        return
    while True:
        if pos >= len(text):
            yield Unreadable(lines.at(pos), "the file ends before the list is closed: add `]`")
            return
        try:
            value, end = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            yield Unreadable(exc.lineno, syntax_message(exc))
            return
        except RecursionError:
            yield Unreadable(lines.at(pos), TOO_DEEP)
            return
        yield Parsed(lines.at(pos), value)
        pos = _skip(text, end)
        if text.startswith(",", pos):
            pos = _skip(text, pos + 1)
        elif text.startswith("]", pos):
            if problem := _after_array(text, pos + 1, lines):
                yield problem
            return
        elif pos >= len(text):
            continue  # reported as an unclosed list at the top of the loop
        else:
            yield Unreadable(
                lines.at(pos),
                (
                    f"invalid JSON at column {_column(text, pos)}: a comma is missing between this "
                    f"record and the one before it (which ends on line {lines.at(end - 1)})"
                ),
            )
            return


def _read_text(path: Path) -> str | Unreadable:
    """The whole file as text (without holding on to its bytes), or where it is not UTF-8."""
    data = path.read_bytes().removeprefix(BOM)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        line_end = data.find(b"\n", exc.start)
        raw = data[line_start : line_end if line_end >= 0 else len(data)]
        line = data.count(b"\n", 0, exc.start) + 1
        return Unreadable(line, not_utf8(raw, exc.start - line_start, file=True))


def _after_array(text: str, pos: int, lines: _LineCounter) -> Unreadable | None:
    pos = _skip(text, pos)
    if pos < len(text):
        return Unreadable(
            lines.at(pos),
            (
                f"invalid JSON at column {_column(text, pos)}: there is more after the `]` that "
                "closes the list; a .json file holds exactly one list of records"
            ),
        )
    return None


def _size(count: int) -> str:
    return f"{count // (1024 * 1024)} MiB" if count >= 1024 * 1024 else f"{count:,} bytes"


def _skip(text: str, pos: int) -> int:
    match = _WHITESPACE.match(text, pos)
    return match.end() if match else pos


class _LineCounter:
    """Line numbers of increasing offsets in a text, counting each newline once."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1

    def at(self, pos: int) -> int:
        if pos < self.pos:
            return self.text.count("\n", 0, pos) + 1
        self.line += self.text.count("\n", self.pos, pos)
        self.pos = pos
        return self.line
