"""A JSON array of records, read element by element through a sliding window of text.

Only the value being read (and a chunk around it) is held, whatever the file size, even for a
minified array on a single line; lines and columns in messages stay those of the file.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from app.datasets.encoding import not_utf8
from app.datasets.items import BytesRead, Item, Parsed, Unreadable, size_in_words
from app.datasets.json_syntax import TOO_DEEP, syntax_message

_DECODER = json.JSONDecoder()
_WHITESPACE = re.compile(r"[ \t\r\n]*")


class TooLong(Exception):
    pass


class NotText(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


class JsonText:
    """A UTF-8 file as a sliding window of text, to read JSON values one at a time.

    Only the value being read (and a chunk around it) is held, whatever the file size, even
    for a minified array on a single line. Line numbers and columns stay those of the file.
    `chunk` is how much is read at a time, `limit` the longest value it will hold.
    """

    def __init__(self, f: BinaryIO, read: BytesRead, *, chunk: int, limit: int) -> None:
        self.f = f
        self.read = read
        self.chunk = chunk
        self.limit = limit
        self.buf = ""
        self.pos = 0
        self.eof = False
        self._pending = b""  # the start of a character cut by the chunk boundary
        self._started = False
        self._newlines = 0  # in all text decoded so far, to locate an encoding error
        self._base_line = 1  # line of buf[0]
        self._base_column = 0  # characters of that line before buf[0]
        self._mark = (0, 1)  # (pos, line): a known line, so counting moves only forward

    def _more(self, want: int = 0) -> bool:
        """Append at least `want` bytes (and a chunk) of text to the window; False once the file
        is done."""
        if self.eof:
            return False
        raw = self.f.read(max(want, self.chunk))
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
        if self.pos < self.chunk:
            return
        cut = self.pos
        line = self.line_at(cut)
        last = self.buf.rfind("\n", 0, cut)
        self._base_column = cut - last - 1 if last >= 0 else self._base_column + cut
        self._base_line = line
        self.buf = self.buf[cut:]
        self.pos = 0
        self._mark = (0, line)

    def _not_text(self, data: bytes, offset: int) -> NotText:
        line = self._newlines + data.count(b"\n", 0, offset) + 1
        start = data.rfind(b"\n", 0, offset) + 1
        end = data.find(b"\n", offset)
        raw = data[start : end if end >= 0 else len(data)]
        return NotText(line, not_utf8(raw, offset - start, complete=end >= 0, file=True))

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
            if len(self.buf) - start > self.limit:
                raise TooLong
            self._more(len(self.buf) - start)

    def _located(self, exc: json.JSONDecodeError) -> json.JSONDecodeError:
        """The decoder's error with the line and column of the file, not of the window."""
        located = json.JSONDecodeError(exc.msg, exc.doc, exc.pos)
        located.lineno = self.line_at(exc.pos)
        located.colno = self.column_at(exc.pos)
        return located


def read_json_array(path: Path, read: BytesRead, *, chunk: int, limit: int) -> Iterator[Item]:
    """The elements of the array in `path` (the caller saw its `[`), each with its line."""
    with path.open("rb") as f:
        text = JsonText(f, read, chunk=chunk, limit=limit)
        try:
            yield from _array_items(text)
        except NotText as exc:
            yield Unreadable(exc.line, exc.message, True)


def _array_items(text: JsonText) -> Iterator[Item]:
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
        except TooLong:
            yield Unreadable(
                line,
                (
                    f"the record that starts on this line is longer than "
                    f"{size_in_words(text.limit)}, too long for one training record: check "
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


def _after_array(text: JsonText) -> Unreadable | None:
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
