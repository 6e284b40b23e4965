"""Validate an uploaded training file and normalize it to chat JSONL.

`validate_file` reads JSONL, a JSON array, CSV/TSV or an Excel sheet (`dataset_containers`,
`dataset_tabular`), detects the record format or uses the one chosen (`dataset_formats`),
reports every problem with its line and field, and writes ``{"messages": [...], "line": N}``
lines to `dest` only when the file is usable. `inspect_file` shows the first records and a
guess of the format, for a person to confirm or to map columns. Pure: no database, no web
framework, no torch.

Speed: JSONL, the format of large datasets, is checked in one pass with orjson and few Python
steps per record (`_Pass.jsonl`); a large file is split at line boundaries over a few worker
processes while this one computes the sha256. Memory stays flat: 12 bytes per record for
duplicate detection, plus the first `max_errors` errors.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import logging
import mmap
import os
import pickle
import re
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import chain, pairwise
from pathlib import Path
from types import TracebackType
from typing import IO, Any, BinaryIO

import orjson

from app.core import errors
from app.services import dataset_containers
from app.services.dataset_containers import (
    Item,
    Parsed,
    Source,
    Unreadable,
    open_values,
    overlong,
    parse_line,
    skip_line,
)
from app.services.dataset_formats import (
    FORMATS,
    ColumnsFormat,
    Message,
    NoAnswer,
    PromptCompletionFormat,
    RecordFormat,
    RecordProblems,
    describe,
    detect,
    formats_of,
    mapping_problem,
    signature_fields,
    unknown_format_message,
)

# The format is decided by a majority of the first records, so one odd record at the top does
# not turn every other record into an error. Bounded so a broken file is not buffered whole.
DETECTION_RECORDS = 256
DETECTION_ITEMS = 4096
DETECTION_BYTES = 16 * 1024 * 1024  # so that 256 huge records are not all held at once
SHORT_ANSWER_CHARS = 2
# A script used by at most this share of the answers is worth a warning (a bilingual set, with
# both scripts common, is not).
MINORITY_SCRIPT_SHARE = 0.2
ERRORS_FILE_CAP = 1_000_000
PROGRESS_INTERVAL_S = 0.05
# JSONL at least this large is checked by several processes (when there are cores for them).
PARALLEL_MIN_BYTES = 64 * 1024 * 1024
MAX_WORKERS = 4

logger = logging.getLogger(__name__)

_MASK64 = (1 << 64) - 1
# Lines are read through a large buffer: the default 8 KiB costs a system call per few lines.
_READ_BUFFER = 1024 * 1024
_CJK = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_LATIN = re.compile("[A-Za-z\u00c0-\u024f]")
_SCRIPT_SAMPLE = 400  # characters of an answer enough to tell its script


@dataclass(frozen=True)
class RecordError:
    line: int  # 1-based line (row for tables) where the record or the problem is
    field: str | None  # e.g. "output", "messages[2].role"; None for problems of the whole record
    message: str  # what is wrong and what to do; the line is not repeated in it

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class ValidationReport:
    format: str | None  # the format of (most) records; None when it could not be detected
    container: str | None  # "jsonl" | "json" | "csv" | "xlsx"; None when the file is neither
    records: int = 0  # valid records (conversations) written
    error_count: int = 0  # every error, including those not listed
    errors: list[RecordError] = field(default_factory=list)  # the first `max_errors`
    warnings: list[str] = field(default_factory=list)
    sha256: str = ""  # of the raw file bytes
    dropped: int = 0  # invalid records skipped because drop_invalid=True
    mapping: dict[str, str] | None = None  # the field/column mapping used, also when detected
    formats: dict[str, int] = field(default_factory=dict)  # records per format (mixed files)
    bytes_total: int = 0
    drop_invalid: bool = False
    # An error that skipping records cannot fix (the file could not be read to its end, or its
    # layout is wrong): never ok, even with drop_invalid.
    unusable: bool = False

    @property
    def ok(self) -> bool:
        if self.records == 0:
            return False
        return self.error_count == 0 or (self.drop_invalid and not self.unusable)

    def summary(self) -> str:
        """One line for a person: what was found, and the first error if any."""
        kind = f"{self.format} " if self.format else ""
        valid = f"{self.records:,} valid {kind}record{_s(self.records)}"
        if self.ok:
            count = len(self.warnings)
            notes = [f"{count} warning{_s(count)}"] if count else []
            if self.dropped:
                notes.insert(0, f"{self.dropped:,} invalid record{_s(self.dropped)} left out")
            return f"{valid} ({'; '.join(notes)})" if notes else valid
        if not self.errors:
            return f"{self.error_count:,} error{_s(self.error_count)}; {valid}"
        more = self.error_count - 1
        rest = f" and {more:,} more error{_s(more)}" if more else ""
        return f"{self.errors[0]}{rest}; {valid}"


class InvalidDataset(errors.InvalidDataset):
    """An uploaded file that cannot be used for training; `report` holds everything found.

    A subclass of the domain error, so the one error handler turns it into a 422 response or a
    page message with the listed errors; str() is a one-line summary.
    """

    def __init__(self, report: ValidationReport) -> None:
        listed = [errors.FieldError(e.message, field=e.field, line=e.line) for e in report.errors]
        super().__init__(
            report.summary(),
            errors=listed,
            error_count=report.error_count,
        )
        self.report = report


@dataclass
class FilePreview:
    """The first records of a file as text, and what we make of it, before validating it all."""

    container: str | None  # "json" | "jsonl" | "csv" | "xlsx"; None when unreadable
    columns: list[str]  # field / column names seen in the first rows, in order
    rows: list[dict[str, str]]  # the first rows, values shortened to PREVIEW_CHARS
    detected_format: str | None
    suggested_mapping: dict[str, str] | None
    problem: str | None  # why the file cannot be read at all, with its line


Progress = Callable[[int, int], None]


def validate_file(
    src: Path,
    *,
    dest: Path | None = None,
    format: str | None = None,
    mapping: dict[str, str] | None = None,
    filename: str | None = None,
    drop_invalid: bool = False,
    max_errors: int = 200,
    errors_file: Path | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
) -> ValidationReport:
    """Check every record of `src`; write it to `dest` as chat JSONL only if the file is usable.

    `format` overrides detection ("columns" means "use `mapping`"); `filename` is the name the
    file was uploaded under (it tells CSV from other text). With `drop_invalid`, invalid
    records are left out of `dest` (and counted in `dropped`) instead of refusing the file.
    `errors_file` receives every error as CSV; `progress(bytes_read, bytes_total)` is called a
    few times a second. `workers` caps the processes used for large JSONL (None: automatic).
    """
    if format is not None and format not in FORMATS:
        raise ValueError(f"unknown dataset format {format!r}; known: {', '.join(FORMATS)}")
    if mapping is not None:
        if problem := mapping_problem(mapping):
            raise ValueError(problem)
        if format not in (None, "columns", "prompt_completion"):
            raise ValueError(f"a column mapping cannot be used with the {format} format")
    elif format == "columns":
        raise ValueError("the columns format needs a mapping (which column is the prompt, …)")
    if max_errors < 0:
        raise ValueError("max_errors must be 0 or more")

    size = src.stat().st_size
    report = ValidationReport(
        format=format, container=None, bytes_total=size, drop_invalid=drop_invalid
    )
    digest = _Sha256(src)
    ticker = _Ticker(progress, size)
    try:
        source = open_values(src, filename=filename)
        report.container = source.container
        head = _head(source)
        plan, stop = _plan(source, head, format=format, mapping=mapping, drop=drop_invalid)
        report.format = plan.format
        report.mapping = plan.mapping
        with _AtomicFile(dest) as out, _ErrorsCsv(errors_file) as errors_out:
            result: _Result
            if stop is not None:
                result = _Pass(plan, out=None, errors_out=errors_out, max_errors=max_errors)
                result.error(stop.line, stop.field, stop.message, fatal=True)
            elif source.container == "jsonl" and not any(
                isinstance(i, Unreadable) and i.fatal for i in head
            ):
                result = _check_jsonl(src, plan, out, errors_out, max_errors, ticker, size, workers)
            else:
                pass_ = _Pass(
                    plan,
                    out=out.file if out else None,
                    errors_out=errors_out,
                    max_errors=max_errors,
                )
                pass_.items(chain(head, source.items), source, ticker)
                pass_.finish()
                result = pass_
            if result.records == 0 and result.error_count == 0:
                _nothing_to_train_on(result, errors_out, max_errors)
            if errors_out is not None and result.error_count > result.error_rows:
                more = result.error_count - result.error_rows
                csv.writer(errors_out).writerow(
                    ("", "", f"… and {more:,} more errors, not listed: fix these first")
                )
            _fill(report, result, source.notes)
            if out is not None and report.ok and result.wrote:
                out.commit()
        ticker.finish()
    finally:
        report.sha256 = digest.hexdigest()
    return report


def validate_file_or_raise(
    src: Path,
    *,
    dest: Path | None = None,
    format: str | None = None,
    max_errors: int = 200,
    **options: Any,
) -> ValidationReport:
    """Like `validate_file`, but raise InvalidDataset (carrying the report) when it is not ok."""
    report = validate_file(src, dest=dest, format=format, max_errors=max_errors, **options)
    if not report.ok:
        raise InvalidDataset(report)
    return report


# --- what the file holds ----------------------------------------------------------------------


@dataclass
class _Plan:
    """How records are read, decided once from the first records: picklable, for workers."""

    format: str | None  # the main format (None: not detected)
    mapping: dict[str, str] | None  # for columns / prompt_completion (given or detected)
    declared: bool  # chosen by the person: other formats are errors, not a mix
    mapped: bool  # the person gave the mapping: read every record with it
    drop_invalid: bool
    table: bool  # records are table rows

    def main(self) -> RecordFormat | None:
        if self.format is None:
            return None
        fmt = FORMATS[self.format]
        if self.mapping is not None and isinstance(fmt, ColumnsFormat):
            return fmt.with_mapping(self.mapping)
        return fmt


def _head(source: Source) -> list[Item]:
    """The first records, enough to detect the format (they stay to be checked)."""
    head: list[Item] = []
    objects = 0
    for item in source.items:
        head.append(item)
        objects += isinstance(item, Parsed) and isinstance(item.value, dict)
        if objects >= DETECTION_RECORDS or len(head) >= DETECTION_ITEMS:
            break
        if objects and source.read.bytes >= DETECTION_BYTES:
            break
        if isinstance(item, Unreadable) and item.fatal:
            break
    return head


def _plan(
    source: Source,
    head: list[Item],
    *,
    format: str | None,
    mapping: dict[str, str] | None,
    drop: bool,
) -> tuple[_Plan, Unreadable | None]:
    """The plan for reading records, and a problem that stops reading before the first one."""
    table = source.columns is not None
    objects = [i.value for i in head if isinstance(i, Parsed) and isinstance(i.value, dict)]
    if table:
        # every row has the header's columns: the header alone says what the records are
        objects = [dict.fromkeys(source.columns or (), "")]
    if mapping is not None:
        # chosen columns: an empty one is an error, whatever the fields are called
        plan = _Plan("columns", dict(mapping), True, True, drop, table)
        columns = (source.columns or []) if table else _keys(objects)
        if objects and (missing := [c for c in mapping.values() if c not in columns]):
            return plan, _missing_columns(missing, columns, table)
        return plan, None
    if format is not None:
        pair = None
        if format == PromptCompletionFormat.name:
            pair = detect([o for o in objects if formats_of(o) == [format]])[1] or {
                "prompt": "prompt",
                "completion": "completion",
            }
        return _Plan(format, pair, True, False, drop, table), None
    name, pair = detect(objects)
    return _Plan(name, pair, False, False, drop, table), None


def _keys(objects: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(key for record in objects for key in record))


def _missing_columns(missing: list[str], columns: list[str] | None, table: bool) -> Unreadable:
    what = "column" if table else "field"
    names = ", ".join(f"`{name}`" for name in missing)
    has = ", ".join(f"`{name}`" for name in columns or []) or "none"
    plural = "s" if len(missing) > 1 else ""
    return Unreadable(
        1,
        (
            f"the mapping names the {what}{plural} {names}, which the file does not have; its "
            f"{what}s are {has}: choose among those"
        ),
        True,
        missing[0],
    )


# --- one pass over the records --------------------------------------------------------------


@dataclass
class _Result:
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


class _Pass(_Result):
    """Reads records of one file (or one range of it): checks, converts, writes and counts."""

    def __init__(
        self,
        plan: _Plan,
        *,
        out: BinaryIO | None,
        errors_out: IO[str] | None,
        max_errors: int,
        sync: bool = True,
    ) -> None:
        super().__init__()
        self.plan = plan
        self.main = plan.main()
        self.out = out
        self.wrote = out is not None
        self.max_errors = max_errors
        self.errors_csv = csv.writer(errors_out) if errors_out is not None else None
        self.scripts = {"cjk": [0, 0], "latin": [0, 0]}
        self.hashes = [array("Q") for _ in range(256)]
        self.lines = [array("I") for _ in range(256)]
        self._pending: list[bytes] = []
        self._synced = _EarlySync(out if sync else None)
        self.written = 0  # bytes of output written (and complete) so far
        self._told_unknown = False
        # keys of a record (in order) -> its format, for records that need no careful look
        self._choices: dict[tuple[str, ...], RecordFormat] = {}
        self._variants: dict[tuple[str, str], RecordFormat] = {}

    def result(self) -> _Result:
        return _Result(**{name: getattr(self, name) for name in _Result.__dataclass_fields__})

    # errors ---------------------------------------------------------------------------------

    def error(self, line: int, field: str | None, message: str, *, fatal: bool = False) -> None:
        self.error_count += 1
        if len(self.errors) < self.max_errors:
            self.errors.append(RecordError(line, field, message))
        if self.errors_csv is not None and self.error_rows < ERRORS_FILE_CAP:
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

    def items(self, items: Iterable[Item], source: Source, ticker: _Ticker) -> None:
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
            count = _write_all(self.out, self._pending)
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


def _write_all(out: BinaryIO, pieces: list[bytes]) -> int:
    """Write `pieces` in one system call when possible: no joined copy of them is made.

    `out` must not hold buffered data of its own (only this function writes to it).
    """
    total = sum(map(len, pieces))
    try:
        written = os.writev(out.fileno(), pieces)
    except (AttributeError, OSError, io.UnsupportedOperation):  # no writev here
        written = 0
    if written < total:
        out.write(b"".join(pieces)[written:])
        out.flush()
    return total


class _EarlySync:
    """Has the disk take the output while records are still being checked.

    The output is fsynced before it is renamed into place; issued every 64 MB from a thread,
    fdatasync overlaps the disk's work with ours, and the last fsync has little left to wait for.
    """

    EVERY = 64 * 1024 * 1024

    def __init__(self, out: BinaryIO | None) -> None:
        self.fd = out.fileno() if out is not None else None
        self.unsynced = 0
        self.thread: threading.Thread | None = None

    def wrote(self, count: int) -> None:
        self.unsynced += count
        if self.fd is None or self.unsynced < self.EVERY:
            return
        if self.thread is not None and self.thread.is_alive():
            return
        self.unsynced = 0
        self.thread = threading.Thread(target=self._sync, args=(self.fd,), daemon=True)
        self.thread.start()

    @staticmethod
    def _sync(fd: int) -> None:
        with contextlib.suppress(OSError):  # the final fsync reports a real failure
            getattr(os, "fdatasync", os.fsync)(fd)  # macOS has no fdatasync

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()
            self.thread = None


# --- JSONL: one process, or several --------------------------------------------------------


def _check_jsonl(
    src: Path,
    plan: _Plan,
    out: _AtomicFile | None,
    errors_out: IO[str] | None,
    max_errors: int,
    ticker: _Ticker,
    size: int,
    workers: int | None,
) -> _Result:
    count = _worker_count(size, workers)
    if count > 1 and plan.format is not None:
        result = _check_jsonl_in_workers(
            src, plan, out, errors_out, max_errors, ticker, size, count
        )
        if result is not None:
            return result
        # a worker failed (it could not start, or died): do it all here instead
        if out is not None:
            out.truncate()
        if errors_out is not None:
            errors_out.seek(0)
            errors_out.truncate()
            _ErrorsCsv.header(errors_out)
    pass_ = _Pass(plan, out=out.file if out else None, errors_out=errors_out, max_errors=max_errors)
    with src.open("rb", buffering=_READ_BUFFER) as f:
        pass_.jsonl(f, line=0, start=0, end=size, tick=ticker.update)
    pass_.finish()
    return pass_.result()


def _worker_count(size: int, workers: int | None) -> int:
    if workers is not None:
        return max(1, min(workers, MAX_WORKERS))
    if size < PARALLEL_MIN_BYTES:
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_WORKERS))


@dataclass
class _Job:
    """One worker's share of a JSONL file: the lines starting in [start, end)."""

    path: str
    start: int
    end: int
    plan: _Plan
    max_errors: int
    max_record_bytes: int
    out: str | None
    errors_out: str | None
    result: str


def _split(src: Path, size: int, count: int) -> list[tuple[int, int]]:
    """`count` byte ranges of about equal size, each starting at the start of a line."""
    bounds = [0]
    with src.open("rb") as f:
        for k in range(1, count):
            f.seek(max(size * k // count - 1, bounds[-1]))
            f.readline()  # to the end of the line this offset falls in
            bounds.append(min(f.tell(), size))
    bounds.append(size)
    return [(a, b) for a, b in pairwise(bounds) if b > a]


def _check_jsonl_in_workers(
    src: Path,
    plan: _Plan,
    out: _AtomicFile | None,
    errors_out: IO[str] | None,
    max_errors: int,
    ticker: _Ticker,
    size: int,
    count: int,
) -> _Result | None:
    """Check ranges of `src` in worker processes and add up what they found (None: a worker
    failed). The first worker writes straight into `out`; the others' parts are appended as
    soon as everything before them is in, while the later workers are still busy."""
    ranges = _split(src, size, count)
    with tempfile.TemporaryDirectory(prefix="tunelab-validate-") as tmp:
        folder = Path(tmp)
        jobs = [
            _Job(
                path=str(src),
                start=start,
                end=end,
                plan=plan,
                max_errors=max_errors,
                max_record_bytes=dataset_containers.MAX_RECORD_BYTES,
                out=(str(out.tmp) if i == 0 else str(folder / f"part{i}")) if out else None,
                errors_out=str(folder / f"errors{i}.csv") if errors_out is not None else None,
                result=str(folder / f"result{i}"),
            )
            for i, (start, end) in enumerate(ranges)
        ]
        if out is not None:
            out.file.flush()
        # One hash seed for all workers, so hash() of equal conversations agrees between them.
        seed = str(int.from_bytes(os.urandom(4), "little") or 1)
        workers = [_Worker(job, seed) for job in jobs]
        tail = _Tail(out.file if out else None, workers)
        try:
            while any(w.running() for w in workers):
                ticker.update(sum(w.done for w in workers))
                if not tail.step():
                    time.sleep(PROGRESS_INTERVAL_S / 2)
            results = [w.outcome() for w in workers]
            if all(r is not None for r in results):
                tail.finish()
        finally:
            for w in workers:
                w.stop()
        if any(r is None for r in results):
            return None
        total = _merge([r for r in results if r is not None], max_errors)
        if errors_out is not None:
            written = 0
            for job in jobs:
                assert job.errors_out is not None
                written += _append_rows(errors_out, Path(job.errors_out), ERRORS_FILE_CAP - written)
            total.error_rows = written
    return total


class _Worker:
    """A child process checking one range; it reports progress on stdout."""

    def __init__(self, job: _Job, seed: str) -> None:
        self.job = job
        self.done = 0  # bytes of its range read
        self.written = 0  # bytes of its part written whole: they may be copied already
        env = dict(os.environ, PYTHONHASHSEED=seed)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        code = "from app.services.dataset_parsing import _range_worker; _range_worker()"
        # kept for the worker's life, to log why it failed if it does
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115
        try:
            self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                [sys.executable, "-c", code],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self.stderr,
                env=env,
            )
        except OSError as exc:
            logger.warning("could not start a dataset validation worker: %s", exc)
            self.proc = None
            return
        self.reader = threading.Thread(target=self._read_progress, daemon=True)
        self.reader.start()
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(pickle.dumps(job))  # small: it fits in the pipe at once
            self.proc.stdin.close()
        except OSError:  # it died at once; outcome() says so
            pass

    def _read_progress(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                done, written = map(int, line.split())
                self.done, self.written = done - self.job.start, written

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def outcome(self) -> _Result | None:
        if self.proc is None:
            return None
        if code := self.proc.wait():
            self.stderr.seek(0)
            tail = self.stderr.read()[-2000:].decode("utf-8", "replace")
            logger.warning("a dataset validation worker failed (exit %s): %s", code, tail)
            return None
        self.reader.join()
        try:
            with open(self.job.result, "rb") as f:
                result = pickle.load(f)
        except (OSError, EOFError, pickle.UnpicklingError):
            return None
        return result if isinstance(result, _Result) else None

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.reader.join(timeout=5)
            assert self.proc.stdout is not None
            self.proc.stdout.close()
        self.stderr.close()


def _range_worker() -> None:
    """Entry point of a worker process: check the range described on stdin."""
    job: _Job = pickle.loads(sys.stdin.buffer.read())
    dataset_containers.MAX_RECORD_BYTES = job.max_record_bytes
    out = open(job.out, "r+b" if job.start == 0 else "wb") if job.out else None  # noqa: SIM115
    errors_out = (
        open(job.errors_out, "w", encoding="utf-8", newline="") if job.errors_out else None  # noqa: SIM115
    )
    try:
        if out is not None:
            out.seek(0, os.SEEK_END)
        # only the first range writes the output itself; the others' parts are copied into it
        pass_ = _Pass(
            job.plan, out=out, errors_out=errors_out, max_errors=job.max_errors, sync=not job.start
        )
        last = [0.0]

        def tick(pos: int) -> None:
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL_S / 2:
                last[0] = now
                sys.stdout.write(f"{pos} {pass_.written}\n")
                sys.stdout.flush()

        with open(job.path, "rb", buffering=_READ_BUFFER) as f:
            line = _count_lines(f, job.start) if job.start else 0
            f.seek(job.start)
            pass_.jsonl(f, line=line, start=job.start, end=job.end, tick=tick)
        pass_.finish()
        with open(job.result, "wb") as result:
            pickle.dump(pass_.result(), result, protocol=pickle.HIGHEST_PROTOCOL)
    finally:
        if out is not None:
            out.close()
        if errors_out is not None:
            errors_out.close()


def _count_lines(f: BinaryIO, end: int) -> int:
    """Newlines in the first `end` bytes: the line number just before a worker's range.

    With long lines (training records are), jumping from newline to newline in a memory map
    beats copying the bytes out to count them; short lines are counted in copied chunks.
    """
    try:
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            if mapped[: min(end, 1 << 20)].count(b"\n") < 2048:  # lines of 512 bytes or more
                lines, find, window = 0, mapped.find, 4 * 1024 * 1024
                for start in range(0, end, window):
                    stop = min(start + window, end)
                    pos = start
                    while pos := find(b"\n", pos, stop) + 1:
                        lines += 1
                    # let go of the pages read: they would count as this process's memory
                    mapped.madvise(mmap.MADV_DONTNEED, start, stop - start)
                return lines
    except (OSError, ValueError, AttributeError):  # cannot be mapped here: count below
        pass
    f.seek(0)
    lines = pos = 0
    while pos < end and (chunk := f.read(min(4 * 1024 * 1024, end - pos))):
        lines += chunk.count(b"\n")
        pos += len(chunk)
    return lines


def _merge(results: list[_Result], max_errors: int) -> _Result:
    """The results of consecutive ranges as if one pass had read them all."""
    # the first part's digests are extended in place, and each later part's freed once copied
    total = _Result(
        hashes=results[0].hashes, lines=results[0].lines, scripts={"cjk": [0, 0], "latin": [0, 0]}
    )
    for k, part in enumerate(results):
        total.records += part.records
        total.invalid += part.invalid
        total.error_count += part.error_count
        total.errors.extend(part.errors[: max(0, max_errors - len(total.errors))])
        total.fatal = total.fatal or part.fatal
        total.wrote = total.wrote and part.wrote
        for name, n in part.formats.items():
            total.formats[name] = total.formats.get(name, 0) + n
            total.format_lines.setdefault(name, part.format_lines[name])
        total.short += part.short
        total.short_line = total.short_line or part.short_line
        total.unanswered += part.unanswered
        total.unanswered_line = total.unanswered_line or part.unanswered_line
        total.unanswered_field = total.unanswered_field or part.unanswered_field
        for script, (n, line) in part.scripts.items():
            counts = total.scripts[script]
            counts[0] += n
            counts[1] = counts[1] or line
        if k:
            for i in range(256):
                total.hashes[i].extend(part.hashes[i])
                total.lines[i].extend(part.lines[i])
                part.hashes[i], part.lines[i] = array("Q"), array("I")
    return total


class _Tail:
    """Appends the workers' parts to the output in order, each as soon as all before it is in.

    The first worker writes the output itself and usually finishes first (the others count
    lines before they start), so the copying of the later parts, and their way to the disk,
    overlap with the work still going on.
    """

    def __init__(self, out: BinaryIO | None, workers: list[_Worker]) -> None:
        self.out = out
        self.workers = workers
        self.current = 1  # the part being appended
        self.copied = 0  # bytes of it appended so far
        self.sync = _EarlySync(out)

    def step(self) -> bool:
        """Append what is ready; False when there was nothing to do."""
        if self.out is None or self.current >= len(self.workers):
            return False
        if self.workers[self.current - 1].running():
            return False  # what comes before this part is not complete yet
        if self.current == 1 and self.copied == 0:
            self.out.seek(0, os.SEEK_END)  # past what the first worker wrote
        worker = self.workers[self.current]
        if worker.proc is None or worker.job.out is None:
            return False  # it never started: everything is done again in one process
        finished = not worker.running()
        try:
            with open(worker.job.out, "rb") as f:
                # a running worker has said how much it has written whole; a finished one is done
                size = os.fstat(f.fileno()).st_size if finished else worker.written
                moved = _copy(f, self.out, self.copied, max(0, size - self.copied))
        except FileNotFoundError:  # not created yet (or the worker failed before)
            moved = 0
        self.copied += moved
        self.sync.wrote(moved)
        if finished:
            self.current += 1
            self.copied = 0
        return moved > 0 or finished

    def finish(self) -> None:
        while self.step():
            pass
        self.sync.join()


def _copy(src: BinaryIO, out: BinaryIO, offset: int, count: int) -> int:
    """Append `count` bytes of `src` from `offset` to `out`, inside the kernel when it can."""
    done = 0
    try:
        while done < count:
            sent = os.copy_file_range(src.fileno(), out.fileno(), count - done, offset + done)
            if sent == 0:
                break
            done += sent
    except (AttributeError, OSError):  # not Linux, or a file system that cannot
        src.seek(offset + done)
        while done < count and (chunk := src.read(min(1024 * 1024, count - done))):
            out.write(chunk)
            done += len(chunk)
        out.flush()
    return done


def _append_rows(out: IO[str], part: Path, room: int) -> int:
    """Copy at most `room` CSV rows of `part` to `out`; return how many were copied."""
    copied = 0
    with part.open(encoding="utf-8", newline="") as f:
        writer = csv.writer(out)
        for row in csv.reader(f):
            if copied >= room:
                break
            writer.writerow(row)
            copied += 1
    return copied


# --- the report -----------------------------------------------------------------------------


def _nothing_to_train_on(result: _Result, errors_out: IO[str] | None, max_errors: int) -> None:
    """The error of a file without a single record (and without another error saying why)."""
    if result.unanswered:
        message = (
            f"every record has an empty `{result.unanswered_field}`: there is no answer to "
            "learn from"
        )
    else:
        message = "the file has no records"
    result.error_count += 1
    result.fatal = True
    if max_errors:
        result.errors.append(RecordError(1, None, message))
    if errors_out is not None:
        csv.writer(errors_out).writerow((1, "", message))
        result.error_rows += 1


def _fill(report: ValidationReport, result: _Result, notes: list[str]) -> None:
    report.records = result.records
    report.error_count = result.error_count
    report.errors = result.errors
    report.unusable = result.fatal
    report.dropped = result.invalid if report.drop_invalid else 0
    report.formats = dict(result.formats)
    if report.format is None and result.formats:
        report.format = max(result.formats, key=result.formats.__getitem__)
    report.warnings = _warnings(result, report.format) + notes


def _warnings(result: _Result, main: str | None) -> list[str]:
    warnings = []
    duplicates, first = _duplicates(result.hashes, result.lines)
    if first is not None:
        line, original = first
        warnings.append(
            f"{duplicates:,} duplicate record{_s(duplicates)}: the same conversation as an "
            f"earlier record (first: line {line} repeats line {original}); duplicates are "
            "trained on more than once"
        )
    if result.short:
        have = "has a very short answer" if result.short == 1 else "have very short answers"
        warnings.append(
            f"{result.short:,} record{_s(result.short)} {have} (under {SHORT_ANSWER_CHARS} "
            f"characters), e.g. line {result.short_line}"
        )
    if result.unanswered:
        n = result.unanswered
        warnings.append(
            f"{n:,} record{_s(n)} {'has' if n == 1 else 'have'} an empty "
            f"`{result.unanswered_field}` (no answer to learn from) and {'was' if n == 1 else 'were'}"
            f" left out, e.g. line {result.unanswered_line}"
        )
    others = {name: n for name, n in result.formats.items() if name != main}
    if others and main in result.formats:
        counts = ", ".join(
            f"{n:,} {name}" for name, n in sorted(result.formats.items(), key=lambda kv: -kv[1])
        )
        examples = ", ".join(f"line {result.format_lines[name]} is {name}" for name in others)
        warnings.append(
            f"the file mixes record formats ({counts}; e.g. {examples}); each record was "
            "converted according to its own format"
        )
    (cjk, cjk_line), (latin, latin_line) = result.scripts["cjk"], result.scripts["latin"]
    if cjk and latin:
        if latin <= MINORITY_SCRIPT_SHARE * (cjk + latin):
            warnings.append(
                f"{latin:,} answer{_s(latin)} {'is' if latin == 1 else 'are'} in a Latin-script "
                f"language such as English while {cjk:,} are in Chinese, Japanese or Korean "
                f"(e.g. line {latin_line}): check that they belong in this dataset"
            )
        elif cjk <= MINORITY_SCRIPT_SHARE * (cjk + latin):
            warnings.append(
                f"{cjk:,} answer{_s(cjk)} {'is' if cjk == 1 else 'are'} in Chinese, Japanese or "
                f"Korean while {latin:,} are in a Latin-script language such as English (e.g. "
                f"line {cjk_line}): check that they belong in this dataset"
            )
    return warnings


def _duplicates(
    hashes: list[array[int]], lines: list[array[int]]
) -> tuple[int, tuple[int, int] | None]:
    """How many conversations repeat an earlier one, and the first (line, original line).

    Digests are kept in 256 buckets by their top byte, so only one bucket at a time is turned
    into Python objects: memory stays at 12 bytes per record.
    """
    count = 0
    first: tuple[int, int] | None = None
    for digests, numbers in zip(hashes, lines, strict=True):
        if len(set(digests)) == len(digests):
            continue
        seen: dict[int, int] = {}
        for digest, line in zip(digests, numbers, strict=True):
            original = seen.get(digest)
            if original is None:
                seen[digest] = line
                continue
            count += 1
            if first is None or line < first[0]:
                first = (line, original)
    return count, first


# --- files ----------------------------------------------------------------------------------


class _AtomicFile:
    """A file that appears at `dest` only on commit(); otherwise nothing is left behind.

    It is written to a temporary file in the same folder and renamed at the end, so a reader
    never sees half a dataset and a failed upload leaves no file.
    """

    def __init__(self, dest: Path | None) -> None:
        self.dest = dest
        self.tmp: Path | None = None
        self._file: BinaryIO | None = None

    @property
    def file(self) -> BinaryIO:
        assert self._file is not None
        return self._file

    def __enter__(self) -> _AtomicFile | None:
        if self.dest is None:
            return None
        fd, name = tempfile.mkstemp(
            dir=self.dest.parent, prefix=f".{self.dest.name}.", suffix=".part"
        )
        self.tmp = Path(name)
        self._file = os.fdopen(fd, "wb")
        return self

    def truncate(self) -> None:
        self.file.seek(0)
        self.file.truncate()

    def commit(self) -> None:
        assert self._file is not None and self.tmp is not None and self.dest is not None
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        os.replace(self.tmp, self.dest)
        self.tmp = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
            self.tmp = None


class _ErrorsCsv:
    """Every error as CSV (line, field, message), UTF-8 with a byte order mark so that Excel
    shows Chinese right. Written next to `path` and moved there when complete."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.tmp: Path | None = None
        self.file: IO[str] | None = None

    @staticmethod
    def header(f: IO[str]) -> None:
        f.write("\ufeff")
        csv.writer(f).writerow(("line", "field", "message"))

    def __enter__(self) -> IO[str] | None:
        if self.path is None:
            return None
        fd, name = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        self.tmp = Path(name)
        self.file = open(fd, "w", encoding="utf-8", newline="")
        self.header(self.file)
        return self.file

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.file is None or self.tmp is None or self.path is None:
            return
        self.file.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


class _Sha256:
    """The sha256 of a file, computed by a thread while the records are read.

    hashlib lets go of the GIL while hashing large blocks, so on a machine with two cores the
    digest costs the validation (almost) no time.
    """

    def __init__(self, path: Path) -> None:
        self._digest = ""
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(path,), daemon=True)
        self._thread.start()

    def _run(self, path: Path) -> None:
        try:
            with path.open("rb") as f:
                self._digest = hashlib.file_digest(f, "sha256").hexdigest()
        except BaseException as exc:  # re-raised in the caller's thread
            self._error = exc

    def hexdigest(self) -> str:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._digest


class _Ticker:
    """Calls progress(bytes_read, bytes_total) at most 20 times a second, and once at the end."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress = progress
        self.total = total
        self.last = 0.0

    def update(self, done: int) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        if now - self.last >= PROGRESS_INTERVAL_S:
            self.last = now
            self.progress(min(done, self.total), self.total)

    def finish(self) -> None:
        if self.progress is not None:
            self.progress(self.total, self.total)


# --- preview --------------------------------------------------------------------------------

PREVIEW_CHARS = 300
# Names people give the two columns of a question/answer table (English and Chinese).
_PROMPT_NAMES = (
    "prompt",
    "question",
    "query",
    "instruction",
    "input",
    "问题",
    "提问",
    "指令",
    "输入",
    "题目",
)
_ANSWER_NAMES = ("completion", "answer", "response", "output", "回答", "答案", "输出", "回复")


def inspect_file(src: Path, *, filename: str | None = None, rows: int = 20) -> FilePreview:
    """The first `rows` records as text and a guess of the format, for a person to confirm."""
    source = open_values(src, filename=filename)
    shown: list[dict[str, str]] = []
    objects: list[dict[str, Any]] = []
    fatal: str | None = None
    first: str | None = None
    for item in source.items:
        if isinstance(item, Unreadable):
            text = str(RecordError(item.line, item.field, item.message))  # "line 3: …"
            first = first or text
            fatal = fatal or (text if item.fatal else None)
            continue
        if isinstance(item.value, dict):
            objects.append(item.value)
            if len(shown) < rows:
                shown.append({str(k): _preview_text(v) for k, v in item.value.items()})
        if len(objects) >= max(rows, DETECTION_RECORDS):
            break
        if len(shown) >= rows and source.read.bytes >= DETECTION_BYTES:
            break
    columns = source.columns if source.columns is not None else _keys(objects[:rows])
    if source.columns is not None:
        objects = [dict.fromkeys(source.columns, "")]
    name, mapping = detect(objects)
    if name == "alpaca" and objects:
        mapping = {
            role: column
            for role, column in (
                ("system", "system"),
                ("prompt", "instruction"),
                ("input", "input"),
                ("completion", "output"),
            )
            if column in columns
        }
    elif name is None and columns:
        mapping = _guess_mapping(columns)
    return FilePreview(
        container=source.container,
        columns=list(columns),
        rows=shown,
        detected_format=name,
        suggested_mapping=mapping,
        problem=fatal or (first if not shown else None),
    )


def _guess_mapping(columns: list[str]) -> dict[str, str] | None:
    lowered = {column.strip().lower(): column for column in columns}
    prompt = next((lowered[n] for n in _PROMPT_NAMES if n in lowered), None)
    answer = next(
        (lowered[n] for n in _ANSWER_NAMES if n in lowered and lowered[n] != prompt), None
    )
    if prompt is None or answer is None:
        return None
    return {"prompt": prompt, "completion": answer}


def _preview_text(value: Any) -> str:
    if isinstance(value, str):
        text = value
    else:
        try:
            text = orjson.dumps(value).decode()
        except (TypeError, orjson.JSONEncodeError):
            text = str(value)
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def _s(count: int) -> str:
    return "" if count == 1 else "s"
