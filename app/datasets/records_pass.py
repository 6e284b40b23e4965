"""One pass over a file's records (or over one range of a JSONL file): each record checked,
converted to chat messages, written out and counted for the warnings."""

from __future__ import annotations

import re
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO

import orjson

from app.core.csv_cells import safe_writer
from app.datasets import containers as dataset_containers
from app.datasets.containers import Source, overlong, parse_line, skip_line
from app.datasets.formats import (
    FORMATS,
    Message,
    NoAnswer,
    PromptCompletionFormat,
    RecordFormat,
    RecordProblems,
    describe,
    formats_of,
    signature_fields,
    unknown_format_message,
)
from app.datasets.items import Item, Unreadable
from app.datasets.output import EarlySync, Ticker, write_all
from app.datasets.plan import Plan
from app.datasets.report import RecordError

SHORT_ANSWER_CHARS = 2

_MASK64 = (1 << 64) - 1
# Lines are read through a large buffer: the default 8 KiB costs a system call per few lines.
READ_BUFFER = 1024 * 1024
_CJK = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_LATIN = re.compile("[A-Za-z\u00c0-\u024f]")
_SCRIPT_SAMPLE = 400  # characters of an answer enough to tell its script


@dataclass
class Result:
    """What a pass found; workers send it back pickled, and results of ranges add up."""

    records: int = 0
    invalid: int = 0
    error_count: int = 0
    errors: list[RecordError] = field(default_factory=list)
    fatal: bool = False
    wrote: bool = True  # the output holds every valid record (it stops at the first error)
    formats: dict[str, int] = field(default_factory=dict)
    format_lines: dict[str, int] = field(default_factory=dict)  # first line of each format
    short: int = 0
    short_line: int = 0
    unanswered: int = 0  # question/answer records with an empty answer, left out
    unanswered_line: int = 0
    unanswered_field: str = ""
    scripts: dict[str, list[int]] = field(default_factory=dict)  # script -> [answers, line]
    hashes: list[array[int]] = field(default_factory=list)  # 256 buckets of 64-bit digests
    lines: list[array[int]] = field(default_factory=list)  # the line of each digest
    error_rows: int = 0  # errors written to the errors file


class RecordsPass(Result):
    """Reads records of one file (or one range of it): checks, converts, writes and counts.

    The first `max_errors` errors are kept, and the first `errors_cap` written to `errors_out`.
    """

    def __init__(
        self,
        plan: Plan,
        *,
        out: BinaryIO | None,
        errors_out: IO[str] | None,
        max_errors: int,
        errors_cap: int,
        sync: bool = True,
    ) -> None:
        super().__init__()
        self.plan = plan
        self.main = plan.main()
        self.out = out
        self.wrote = out is not None
        self.max_errors = max_errors
        self.errors_cap = errors_cap
        self.errors_csv = safe_writer(errors_out) if errors_out is not None else None
        self.scripts = {"cjk": [0, 0], "latin": [0, 0]}
        self.hashes = [array("Q") for _ in range(256)]
        self.lines = [array("I") for _ in range(256)]
        self._pending: list[bytes] = []
        self._synced = EarlySync(out if sync else None)
        self.written = 0  # bytes of output written (and complete) so far
        self._told_unknown = False
        # keys of a record (in order) -> its format, for records that need no careful look
        self._choices: dict[tuple[str, ...], RecordFormat] = {}
        self._variants: dict[tuple[str, str], RecordFormat] = {}

    def result(self) -> Result:
        return Result(**{name: getattr(self, name) for name in Result.__dataclass_fields__})

    # errors ---------------------------------------------------------------------------------

    def error(self, line: int, field: str | None, message: str, *, fatal: bool = False) -> None:
        self.error_count += 1
        if len(self.errors) < self.max_errors:
            self.errors.append(RecordError(line, field, message))
        if self.errors_csv is not None and self.error_rows < self.errors_cap:
            self.errors_csv.writerow((line, field or "", message))
            self.error_rows += 1
        self.fatal = self.fatal or fatal
        if self.wrote and (fatal or not self.plan.drop_invalid):
            # the output will not be used: stop writing a copy of a broken file
            self.wrote = False
            self._pending.clear()

    def unreadable(self, item: Unreadable) -> None:
        self.error(item.line, item.field, item.message, fatal=item.fatal)
        if not item.fatal:
            self.invalid += 1

    # records --------------------------------------------------------------------------------

    def items(self, items: Iterable[Item], source: Source, ticker: Ticker) -> None:
        """The careful path, for every container: one parsed value at a time."""
        for item in items:
            if isinstance(item, Unreadable):
                self.unreadable(item)
            else:
                self.record(item.line, item.value)
            ticker.update(source.read.bytes)

    def record(self, line: int, value: Any) -> None:
        if not isinstance(value, dict):
            self.invalid += 1
            self.error(
                line,
                None,
                f"a record must be a JSON object {{…}} with fields, but this is {describe(value)}",
            )
            return
        fmt = self._choose(line, value)
        if fmt is None:
            self.invalid += 1
            return
        if (messages := fmt.quick(value)) is not None:
            try:
                encoded = orjson.dumps(messages)
            except orjson.JSONEncodeError:
                pass  # half of a surrogate pair (the json module lets it in): normalize explains
            else:
                self.emit(line, fmt.name, messages, encoded)
                return
        try:
            conversations = fmt.conversations(value)
        except RecordProblems as exc:
            self.invalid += 1
            for problem in exc.problems:
                self.error(line, problem.field, problem.message)
            return
        except NoAnswer as exc:
            self.unanswered += 1
            self.unanswered_line = self.unanswered_line or line
            self.unanswered_field = self.unanswered_field or exc.field
            return
        for messages in conversations:
            self.emit(line, fmt.name, messages)

    def _choose(self, line: int, value: dict[str, Any]) -> RecordFormat | None:
        """The format to read `value` with, or None after reporting why there is none."""
        main, plan = self.main, self.plan
        if main is None:
            # Every record would fail the same way; one message says it once, at the first.
            if not self._told_unknown:
                # a table's columns are in its header, row 1
                where = 1 if plan.table else line
                self.error(where, None, unknown_format_message(value, table=plan.table))
                self._told_unknown = True
            return None
        chosen = main
        looks = [] if plan.mapped else formats_of(value)
        if looks and main.name not in looks:
            if plan.declared:
                self.error(
                    line,
                    None,
                    (
                        f"this record looks like {looks[0]} (it has "
                        f"{signature_fields(looks[0], value)}) but the file was declared as "
                        f"{main.name}: all records must then have that format (upload without "
                        "choosing a format to read each record in its own)"
                    ),
                )
                return None
            if len(looks) > 1:
                self.error(line, None, unknown_format_message(value, table=plan.table))
                return None
            chosen = self._variant(looks[0], value)
        if len(self._choices) < 1024:
            self._choices[tuple(value)] = chosen
        return chosen

    def _variant(self, name: str, value: dict[str, Any]) -> RecordFormat:
        """A format other than the main one, for a record of a mixed file."""
        if name != PromptCompletionFormat.name:
            return FORMATS[name]
        pair = PromptCompletionFormat.mapping_of(value) or {}
        key = (pair.get("prompt", ""), pair.get("completion", ""))
        if key not in self._variants:
            self._variants[key] = PromptCompletionFormat(pair or None)
        return self._variants[key]

    def emit(
        self, line: int, name: str, messages: list[Message], encoded: bytes | None = None
    ) -> None:
        """Count, hash, classify and write one valid conversation (`encoded`: its messages as
        JSON, when already made)."""
        self.records += 1
        if name in self.formats:
            self.formats[name] += 1
        else:
            self.formats[name] = 1
            self.format_lines[name] = line
        if encoded is None:
            encoded = orjson.dumps(messages)
        # Digests of the messages only: the same conversation on two lines is a duplicate.
        # hash() is fast and 64-bit; worker processes share one PYTHONHASHSEED to agree on it.
        digest = hash(encoded) & _MASK64
        bucket = digest >> 56
        self.hashes[bucket].append(digest)
        self.lines[bucket].append(line)
        if self.wrote:
            pending = self._pending
            pending.append(b'{"messages":')
            pending.append(encoded)
            pending.append(b',"line":%d}\n' % line)
            # orjson's bytes keep spare room (about 16 KB each): write them out soon
            if len(pending) > 300:
                self.flush()
        for message in messages:
            if message["role"] == "assistant":
                text = message["content"]
                # len() counts characters, so a one-character Chinese answer is short like "y"
                if len(text) < SHORT_ANSWER_CHARS or (
                    (text[0].isspace() or text[-1].isspace())
                    and len(text.strip()) < SHORT_ANSWER_CHARS
                ):
                    self.short += 1
                    self.short_line = self.short_line or line
                    break
        # The script of the (last) answer: Han, kana or hangul, else Latin letters, else neither
        # (numbers, code symbols). A few hundred characters tell, whatever the answer's length.
        answer = messages[-1]["content"]
        if not answer.isascii() and _CJK.search(answer, 0, _SCRIPT_SAMPLE):
            script = self.scripts["cjk"]
        elif _LATIN.search(answer, 0, _SCRIPT_SAMPLE):
            script = self.scripts["latin"]
        else:
            return
        script[0] += 1
        script[1] = script[1] or line

    def flush(self) -> None:
        if self._pending and self.wrote and self.out is not None:
            count = write_all(self.out, self._pending)
            self.written += count
            self._synced.wrote(count)
        self._pending.clear()

    def finish(self) -> None:
        """Write what is pending and wait for the disk writes started on the way."""
        self.flush()
        self._synced.join()

    # the fast path for JSONL ----------------------------------------------------------------

    def jsonl(
        self, f: BinaryIO, *, line: int, start: int, end: int, tick: Callable[[int], None]
    ) -> None:
        """Check the lines of `f` from byte `start` (the first is line `line` + 1) to `end`.

        orjson parses each line and, when the record's fields are the usual ones for its
        format, the format's `quick` converts it; anything else (a line orjson refuses, a value
        that needs a careful look) goes through the json module and `record`, which give the
        located, friendly messages. The rest of the loop is `emit`, written out in place: this
        loop runs once per record of the largest files, and every lookup saved counts.
        """
        limit = dataset_containers.MAX_RECORD_BYTES
        loads, dumps, decode_error = orjson.loads, orjson.dumps, orjson.JSONDecodeError
        readline, choices = f.readline, self._choices
        formats, format_lines, hashes, lines = (
            self.formats,
            self.format_lines,
            self.hashes,
            self.lines,
        )
        cjk, latin = self.scripts["cjk"], self.scripts["latin"]
        cjk_search, latin_search = _CJK.search, _LATIN.search
        records = short = short_line = 0
        pending, writing = self._pending, self.wrote
        pos = start
        every = dataset_containers.READ_CHUNK
        next_tick = pos + every
        while pos < end:
            raw = readline(limit + 1)
            if not raw:
                break
            line += 1
            pos += len(raw)
            if len(raw) > limit and raw[-1] != 10:
                size = skip_line(f, len(raw))
                pos += size + 1 - len(raw)
                self.unreadable(Unreadable(line, overlong(size)))
                writing = self.wrote
                continue
            if pos >= next_tick:
                tick(pos)
                next_tick = pos + every
            try:
                value = loads(raw)
            except decode_error:
                item = parse_line(line, raw)
                if isinstance(item, Unreadable):
                    self.unreadable(item)
                elif item is not None:
                    self.record(line, item.value)
                writing = self.wrote
                continue
            fmt = choices.get(tuple(value)) if type(value) is dict else None
            if fmt is None or (messages := fmt.quick(value)) is None:
                self.record(line, value)
                writing = self.wrote
                continue

            # emit(), in place
            records += 1
            name = fmt.name
            if name in formats:
                formats[name] += 1
            else:
                formats[name] = 1
                format_lines[name] = line
            encoded = dumps(messages)
            digest = hash(encoded) & _MASK64
            bucket = digest >> 56
            hashes[bucket].append(digest)
            lines[bucket].append(line)
            if writing:
                pending.append(b'{"messages":')
                pending.append(encoded)
                pending.append(b',"line":%d}\n' % line)
                if len(pending) > 300:
                    self.flush()
            for message in messages:
                if message["role"] == "assistant":
                    text = message["content"]
                    if len(text) < SHORT_ANSWER_CHARS or (
                        (text[0].isspace() or text[-1].isspace())
                        and len(text.strip()) < SHORT_ANSWER_CHARS
                    ):
                        short += 1
                        short_line = short_line or line
                        break
            text = messages[-1]["content"]
            if not text.isascii() and cjk_search(text, 0, _SCRIPT_SAMPLE):
                cjk[0] += 1
                cjk[1] = cjk[1] or line
            elif latin_search(text, 0, _SCRIPT_SAMPLE):
                latin[0] += 1
                latin[1] = latin[1] or line
        self.records += records
        self.short += short
        if short_line and (not self.short_line or short_line < self.short_line):
            self.short_line = short_line
        tick(pos)
