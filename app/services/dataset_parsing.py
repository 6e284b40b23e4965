"""Validate an uploaded training file and normalize it to chat JSONL.

`validate_file` reads a JSON array or JSONL file (`dataset_containers`), detects the record
format (`dataset_formats`), reports every problem with its line and field, and writes
``{"messages": [...]}`` lines to `dest` only when the whole file is valid. Pure: no database,
no web framework, no torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from types import TracebackType
from typing import IO

from app.core import errors
from app.services.dataset_containers import Parsed, Unreadable, read_values
from app.services.dataset_formats import (
    FORMATS,
    Message,
    RecordProblems,
    describe,
    detect_format,
    formats_of,
    signature_fields,
    unknown_format_message,
)

# The format is decided by a majority of the first records, so one odd record at the top does
# not turn every other record into an error. Bounded so a broken file is not buffered whole.
DETECTION_RECORDS = 256
DETECTION_ITEMS = 4096
SHORT_ANSWER_CHARS = 2


@dataclass(frozen=True)
class RecordError:
    line: int  # 1-based line where the record (or the syntax error) is
    field: str | None  # e.g. "output", "messages[2].role"; None for problems of the whole record
    message: str  # what is wrong and what to do; the line is not repeated in it

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class ValidationReport:
    format: str | None  # "alpaca" | "chat"; None when it could not be detected
    container: str | None  # "jsonl" | "json"; None when the file is neither
    records: int = 0  # valid records
    error_count: int = 0  # every error, including those not listed
    errors: list[RecordError] = field(default_factory=list)  # the first `max_errors`
    warnings: list[str] = field(default_factory=list)
    sha256: str = ""  # of the raw file bytes

    @property
    def ok(self) -> bool:
        return self.error_count == 0 and self.records > 0

    def summary(self) -> str:
        """One line for a person: what was found, and the first error if any."""
        kind = f"{self.format} " if self.format else ""
        valid = f"{self.records:,} valid {kind}record{_s(self.records)}"
        if self.ok:
            count = len(self.warnings)
            return f"{valid} ({count} warning{_s(count)})" if count else valid
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


def validate_file(
    src: Path,
    *,
    dest: Path | None = None,
    format: str | None = None,
    max_errors: int = 200,
) -> ValidationReport:
    """Check every record of `src`; write it to `dest` as chat JSONL only if all of it is valid."""
    if format is not None and format not in FORMATS:
        raise ValueError(f"unknown dataset format {format!r}; known: {', '.join(FORMATS)}")
    if max_errors < 0:
        raise ValueError("max_errors must be 0 or more")
    container, items = read_values(src)
    report = ValidationReport(format=format, container=container, sha256=_sha256(src))
    collect = _Collector(report, max_errors)

    head: list[Parsed | Unreadable] = []
    objects = 0
    for item in items:
        head.append(item)
        objects += isinstance(item, Parsed) and isinstance(item.value, dict)
        if objects >= DETECTION_RECORDS or len(head) >= DETECTION_ITEMS:
            break
    if format is None:
        report.format = detect_format(
            [i.value for i in head if isinstance(i, Parsed) and isinstance(i.value, dict)]
        )

    check = _RecordCheck(report.format, declared=format is not None, collect=collect)
    stats = _Stats()
    with _AtomicJsonl(dest) as out:
        for item in chain(head, items):
            if isinstance(item, Unreadable):
                collect.add(RecordError(item.line, None, item.message))
            elif (messages := check(item)) is not None:
                report.records += 1
                line = json.dumps({"messages": messages}, ensure_ascii=False)
                stats.add(item.line, messages, line)
                if out is not None and report.error_count == 0:
                    out.write(line)
            if out is not None and report.error_count:
                out.discard()  # it will not be used; stop writing a copy of a broken file
        if report.records == 0 and report.error_count == 0:
            collect.add(RecordError(1, None, "the file has no records"))
        report.warnings = stats.warnings()
        if out is not None and report.ok:
            out.commit()
    return report


def validate_file_or_raise(
    src: Path,
    *,
    dest: Path | None = None,
    format: str | None = None,
    max_errors: int = 200,
) -> ValidationReport:
    """Like `validate_file`, but raise InvalidDataset (carrying the report) when it is not ok."""
    report = validate_file(src, dest=dest, format=format, max_errors=max_errors)
    if not report.ok:
        raise InvalidDataset(report)
    return report


class _Collector:
    """Counts every error and keeps the first `limit` of them."""

    def __init__(self, report: ValidationReport, limit: int) -> None:
        self.report = report
        self.limit = limit

    def add(self, error: RecordError) -> None:
        self.report.error_count += 1
        if len(self.report.errors) < self.limit:
            self.report.errors.append(error)


class _RecordCheck:
    """Turns one parsed value into messages, or reports why it cannot be one (returns None)."""

    def __init__(self, format_name: str | None, *, declared: bool, collect: _Collector) -> None:
        self.format = FORMATS[format_name] if format_name else None
        self.declared = declared
        self.collect = collect
        self.told_unknown = False

    def __call__(self, item: Parsed) -> list[Message] | None:
        line, value = item
        if not isinstance(value, dict):
            self.error(
                line,
                None,
                (
                    "a record must be a JSON object {…} with fields, "
                    f"but this is {describe(value)}"
                ),
            )
            return None
        if self.format is None:
            # Every record would fail the same way; one message says it once, at the first.
            if not self.told_unknown:
                self.error(line, None, unknown_format_message(value))
                self.told_unknown = True
            return None
        looks = formats_of(value)
        if looks and self.format.name not in looks:
            chosen = "was declared as" if self.declared else "is"
            self.error(
                line,
                None,
                (
                    f"this record looks like {looks[0]} (it has {signature_fields(looks[0], value)}) "
                    f"but the file {chosen} {self.format.name}: all records in a file must have "
                    "the same format"
                ),
            )
            return None
        try:
            return self.format.normalize(value)
        except RecordProblems as exc:
            for problem in exc.problems:
                self.error(line, problem.field, problem.message)
            return None

    def error(self, line: int, field: str | None, message: str) -> None:
        self.collect.add(RecordError(line, field, message))


class _Stats:
    """Non-blocking observations about the valid records, turned into warnings at the end."""

    def __init__(self) -> None:
        self.first_line: dict[bytes, int] = {}  # digest of a conversation -> line it first appeared
        self.duplicates = 0
        self.first_duplicate: tuple[int, int] | None = None
        self.short = 0
        self.first_short: int | None = None

    def add(self, line: int, messages: list[Message], normalized: str) -> None:
        # `normalized` is the record as written out; its keys always come in the same order.
        digest = hashlib.blake2b(normalized.encode("utf-8"), digest_size=16).digest()
        if digest in self.first_line:
            self.duplicates += 1
            self.first_duplicate = self.first_duplicate or (line, self.first_line[digest])
        else:
            self.first_line[digest] = line
        # len() counts characters, so a one-character Chinese answer is short like "y" is.
        if any(
            m["role"] == "assistant" and len(m["content"].strip()) < SHORT_ANSWER_CHARS
            for m in messages
        ):
            self.short += 1
            self.first_short = self.first_short or line

    def warnings(self) -> list[str]:
        warnings = []
        if self.first_duplicate:
            line, original = self.first_duplicate
            warnings.append(
                f"{self.duplicates:,} duplicate record{_s(self.duplicates)}: the same conversation "
                f"as an earlier record (first: line {line} repeats line {original}); duplicates "
                "are trained on more than once"
            )
        if self.first_short:
            have = "has a very short answer" if self.short == 1 else "have very short answers"
            warnings.append(
                f"{self.short:,} record{_s(self.short)} {have} (under {SHORT_ANSWER_CHARS} "
                f"characters), e.g. line {self.first_short}"
            )
        return warnings


class _AtomicJsonl:
    """A JSONL file that appears at `dest` only on commit(); otherwise nothing is left behind.

    It is written to a temporary file in the same folder and renamed at the end, so a reader
    never sees half a dataset and a failed upload leaves no file.
    """

    def __init__(self, dest: Path | None) -> None:
        self.dest = dest
        self.tmp: Path | None = None
        self.file: IO[str] | None = None

    def __enter__(self) -> _AtomicJsonl | None:
        if self.dest is None:
            return None
        fd, name = tempfile.mkstemp(
            dir=self.dest.parent, prefix=f".{self.dest.name}.", suffix=".part"
        )
        self.tmp = Path(name)
        self.file = os.fdopen(fd, "w", encoding="utf-8", newline="\n")
        return self

    def write(self, line: str) -> None:
        if self.file is not None:
            self.file.write(line + "\n")

    def commit(self) -> None:
        assert self.file is not None and self.tmp is not None and self.dest is not None
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        self.file = None
        os.replace(self.tmp, self.dest)
        self.tmp = None

    def discard(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
            self.tmp = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.discard()


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _s(count: int) -> str:
    return "" if count == 1 else "s"
