"""What validating a dataset file found: the records, every error with its line and field."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.core import errors


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
        valid = f"{self.records:,} valid {kind}record{plural(self.records)}"
        if self.ok:
            count = len(self.warnings)
            notes = [f"{count} warning{plural(count)}"] if count else []
            if self.dropped:
                notes.insert(0, f"{self.dropped:,} invalid record{plural(self.dropped)} left out")
            return f"{valid} ({'; '.join(notes)})" if notes else valid
        if not self.errors:
            return f"{self.error_count:,} error{plural(self.error_count)}; {valid}"
        more = self.error_count - 1
        rest = f" and {more:,} more error{plural(more)}" if more else ""
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


def plural(count: int) -> str:
    """The "s" of "1 record", "2 records"."""
    return "" if count == 1 else "s"
