"""Validate an uploaded training file and normalize it to chat JSONL.

`validate_file` reads JSONL, a JSON array, CSV/TSV or an Excel sheet (`dataset_containers`,
`dataset_tabular`), detects the record format or uses the one chosen (`dataset_formats`),
reports every problem with its line and field, and writes ``{"messages": [...], "line": N}``
lines to `dest` only when the file is usable. `inspect_file` shows the first records and a
guess of the format, for a person to confirm or to map columns. Pure: no database, no web
framework, no torch.

Speed: JSONL, the format of large datasets, is checked in one pass with orjson and few Python
steps per record (`RecordsPass.jsonl`); a large file is split at line boundaries over a few
worker processes (`dataset_workers`) while this one computes the sha256. Memory stays flat: 12
bytes per record for duplicate detection, plus the first `max_errors` errors.

Here: the order of the steps. Each step has its module: `dataset_plan` (format and mapping,
from the first records), `dataset_records_pass` (checking and converting records),
`dataset_workers`, `dataset_output` (the files written), `dataset_warnings`, `dataset_report`
(what is returned), `dataset_inspect` (the preview).
"""

from __future__ import annotations

from itertools import chain
from pathlib import Path
from typing import IO, Any

from app.core.csv_cells import safe_writer
from app.datasets.containers import open_values
from app.datasets.formats import FORMATS, mapping_problem
from app.datasets.inspection import PREVIEW_CHARS, FilePreview, inspect_file
from app.datasets.items import Unreadable
from app.datasets.output import AtomicFile, ErrorsCsv, Progress, Sha256, Ticker
from app.datasets.plan import (
    DETECTION_BYTES,
    DETECTION_ITEMS,
    DETECTION_RECORDS,
    Plan,
    make_plan,
    read_head,
)
from app.datasets.record_warnings import MINORITY_SCRIPT_SHARE, record_warnings
from app.datasets.records_pass import READ_BUFFER, SHORT_ANSWER_CHARS, RecordsPass, Result
from app.datasets.report import InvalidDataset, RecordError, ValidationReport
from app.datasets.workers import (
    MAX_WORKERS,
    PARALLEL_MIN_BYTES,
    check_jsonl_in_workers,
    worker_count,
)

__all__ = [
    "DETECTION_BYTES",
    "DETECTION_ITEMS",
    "DETECTION_RECORDS",
    "ERRORS_FILE_CAP",
    "MAX_WORKERS",
    "MINORITY_SCRIPT_SHARE",
    "PARALLEL_MIN_BYTES",
    "PREVIEW_CHARS",
    "PROGRESS_INTERVAL_S",
    "SHORT_ANSWER_CHARS",
    "FilePreview",
    "InvalidDataset",
    "Progress",
    "RecordError",
    "ValidationReport",
    "inspect_file",
    "validate_file",
    "validate_file_or_raise",
]

# Read at each validation and handed down to the steps, so that changing them here (as tests
# do) changes them everywhere.
ERRORS_FILE_CAP = 1_000_000  # rows of the errors file
PROGRESS_INTERVAL_S = 0.05


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
    digest = Sha256(src)
    ticker = Ticker(progress, size, every=PROGRESS_INTERVAL_S)
    try:
        source = open_values(src, filename=filename)
        report.container = source.container
        head = read_head(source)
        plan, stop = make_plan(source, head, format=format, mapping=mapping, drop=drop_invalid)
        report.format = plan.format
        report.mapping = plan.mapping
        with AtomicFile(dest) as out, ErrorsCsv(errors_file) as errors_out:
            result: Result
            if stop is not None:
                result = RecordsPass(
                    plan,
                    out=None,
                    errors_out=errors_out,
                    max_errors=max_errors,
                    errors_cap=ERRORS_FILE_CAP,
                )
                result.error(stop.line, stop.field, stop.message, fatal=True)
            elif source.container == "jsonl" and not any(
                isinstance(i, Unreadable) and i.fatal for i in head
            ):
                result = _check_jsonl(src, plan, out, errors_out, max_errors, ticker, size, workers)
            else:
                pass_ = RecordsPass(
                    plan,
                    out=out.file if out else None,
                    errors_out=errors_out,
                    max_errors=max_errors,
                    errors_cap=ERRORS_FILE_CAP,
                )
                pass_.items(chain(head, source.items), source, ticker)
                pass_.finish()
                result = pass_
            if result.records == 0 and result.error_count == 0:
                _nothing_to_train_on(result, errors_out, max_errors)
            if errors_out is not None and result.error_count > result.error_rows:
                more = result.error_count - result.error_rows
                safe_writer(errors_out).writerow(
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


def _check_jsonl(
    src: Path,
    plan: Plan,
    out: AtomicFile | None,
    errors_out: IO[str] | None,
    max_errors: int,
    ticker: Ticker,
    size: int,
    workers: int | None,
) -> Result:
    """Check a JSONL file in one pass, in this process or (large files) in several."""
    count = worker_count(size, workers)
    if count > 1 and plan.format is not None:
        result = check_jsonl_in_workers(
            src, plan, out, errors_out, max_errors, ticker, size, count, errors_cap=ERRORS_FILE_CAP
        )
        if result is not None:
            return result
        # a worker failed (it could not start, or died): do it all here instead
        if out is not None:
            out.truncate()
        if errors_out is not None:
            errors_out.seek(0)
            errors_out.truncate()
            ErrorsCsv.header(errors_out)
    pass_ = RecordsPass(
        plan,
        out=out.file if out else None,
        errors_out=errors_out,
        max_errors=max_errors,
        errors_cap=ERRORS_FILE_CAP,
    )
    with src.open("rb", buffering=READ_BUFFER) as f:
        pass_.jsonl(f, line=0, start=0, end=size, tick=ticker.update)
    pass_.finish()
    return pass_.result()


def _nothing_to_train_on(result: Result, errors_out: IO[str] | None, max_errors: int) -> None:
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
        safe_writer(errors_out).writerow((1, "", message))
        result.error_rows += 1


def _fill(report: ValidationReport, result: Result, notes: list[str]) -> None:
    report.records = result.records
    report.error_count = result.error_count
    report.errors = result.errors
    report.unusable = result.fatal
    report.dropped = result.invalid if report.drop_invalid else 0
    report.formats = dict(result.formats)
    if report.format is None and result.formats:
        report.format = max(result.formats, key=result.formats.__getitem__)
    report.warnings = record_warnings(result, report.format) + notes
