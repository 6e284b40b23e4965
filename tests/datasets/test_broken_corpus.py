"""Broken uploads: every one is refused with a clear, located error, leaves no file, raises nothing.

Small samples are committed in tests/data/broken (see its README); large or binary ones are
built here in tmp_path: a 100 MB line, a JSON bomb of brackets, a workbook with merged cells,
a zip-bomb workbook (tests/zip_bombs.py).
"""

from __future__ import annotations

import shutil
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import openpyxl
import pytest

from app.datasets.parsing import inspect_file, validate_file
from tests.zip_bombs import bomb_workbook

BROKEN = Path(__file__).resolve().parents[1] / "data" / "broken"
MB = 1024 * 1024


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[Path], Path]
    line: int  # of the first error
    says: str  # in the first error's message
    field: str | None = None
    # the error spoils the file as a whole: leaving out bad records does not make it usable
    fatal: bool = True


def committed(name: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        return Path(shutil.copy(BROKEN / name, folder / name))

    return make


def built(name: str, content: bytes) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(content)
        return path

    return make


def merged_workbook(folder: Path) -> Path:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["instruction", "input", "output"])
    for i in range(1, 6):
        sheet.append([f"把第{i}句话翻译成英文。", "", f"Sentence {i}."])
    sheet.merge_cells("A4:A6")  # "one instruction for three rows", as people lay sheets out
    path = folder / "merged.xlsx"
    book.save(path)
    return path


def truncated_zip(folder: Path) -> Path:
    whole = merged_workbook(folder).read_bytes()
    path = folder / "cut.xlsx"
    path.write_bytes(whole[: len(whole) // 2])  # an upload that stopped half way
    return path


CASES = [
    Case(
        "truncated JSON array",
        committed("truncated_array.json"),
        15,
        "the text value that starts here is not closed",
    ),
    Case(
        "truncated JSONL",
        built("cut.jsonl", b'{"instruction": "a", "output": "bb"}\n{"instruction": "c", "outp'),
        2,
        "invalid JSON at column",
        fatal=False,
    ),
    Case(
        "wrong types",
        committed("wrong_types.jsonl"),
        2,
        "`instruction` must be text, but it is a list of 1 item",
        "instruction",
        fatal=False,
    ),
    Case(
        "nested garbage",
        committed("nested_garbage.jsonl"),
        2,
        "`messages[0]` must be an object with `role` and `content`",
        "messages[0]",
        fatal=False,
    ),
    Case(
        "invalid UTF-8 on one line",
        committed("invalid_utf8_on_line_3.jsonl"),
        3,
        "this line is not UTF-8 text (byte 0xE9 at byte 30 of the line)",
        fatal=False,
    ),
    Case(
        "invalid UTF-8 inside a JSON array",
        built("latin1.json", b'[{"instruction": "a", "output": "b"},\n' + b'{"x": "\xe9"}]'),
        2,
        "this file is not UTF-8 text",
    ),
    Case(
        "workbook with merged cells",
        merged_workbook,
        4,
        "cells A4:A6 are merged: unmerge them and fill in the value on each row",
        "instruction",
    ),
    Case(
        "CSV with a missing column",
        committed("csv_missing_column.csv"),
        3,
        "this row has 2 cells but the header (row 1) has 3 columns",
        fatal=False,
    ),
    Case("JSON bomb of brackets", built("bomb.json", b"[" * 200_000), 1, "nested too deeply"),
    Case(
        "JSONL bomb of objects",
        built("bomb.jsonl", b'{"a": ' * 200_000 + b"\n"),
        1,
        "nested too deeply",
        fatal=False,
    ),
    Case(
        "xlsx that is not a zip",
        committed("not_a_zip.xlsx"),
        1,
        "is named .xlsx but is not an Excel workbook",
    ),
    Case("xlsx cut in half", truncated_zip, 1, "this Excel file is damaged"),
    Case(
        "zip bomb workbook",  # 70 KB that would unpack to 50 MB of rows
        bomb_workbook,
        1,
        "this workbook is packed far more tightly than real spreadsheets are",
    ),
    Case("empty CSV", committed("empty.csv"), 1, "the file is empty"),
    Case(
        "CSV with only a header",
        committed("csv_only_header.csv"),
        2,
        "the table has a header (row 1) but no rows of data below it",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_broken_upload_is_refused_with_a_located_error_and_leaves_no_file(
    tmp_path: Path, case: Case
) -> None:
    src = case.make(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    dest = out / "records.jsonl"
    report = validate_file(src, dest=dest, errors_file=out / "errors.csv")
    assert not report.ok
    first = report.errors[0]
    assert (first.line, first.field) == (case.line, case.field), report.errors
    assert case.says in first.message
    assert "\n" not in first.message
    assert sorted(p.name for p in out.iterdir()) == ["errors.csv"]  # no dest, no temp file

    dropping = validate_file(src, dest=dest, drop_invalid=True)
    assert dropping.ok is (not case.fatal and dropping.records > 0)
    assert dest.exists() is dropping.ok

    preview = inspect_file(src)  # never raises either
    assert preview.problem is None or preview.problem.split(":")[0] in (
        f"line {case.line}",
        "line 1",
    )


def test_a_100_mb_line_is_refused_without_holding_it_in_memory(tmp_path: Path) -> None:
    src = tmp_path / "huge.jsonl"
    with src.open("wb") as f:
        f.write(b'{"instruction": "')
        for _ in range(100):
            f.write(b"a" * MB)
        f.write(b'", "output": "b"}\n{"instruction": "a", "output": "bb"}\n')
    dest = tmp_path / "records.jsonl"
    tracemalloc.start()
    try:
        report = validate_file(src, dest=dest, workers=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(report.errors[0]) == (
        "line 1: this line is 100 MB long; a record may be at most 16 MB: check that the file "
        "has one record per line"
    )
    assert (report.error_count, report.records, report.ok) == (1, 1, False)
    assert not dest.exists()
    assert peak < 40 * MB, peak  # the 16 MB the line is read up to, not its 100 MB


def test_a_100_mb_record_in_a_json_array_is_refused_with_bounded_memory(tmp_path: Path) -> None:
    src = tmp_path / "huge.json"
    with src.open("wb") as f:
        f.write(b'[{"instruction": "a", "output": "bb"},\n{"instruction": "')
        for _ in range(100):
            f.write(b"a" * MB)
        f.write(b'", "output": "b"}]')
    tracemalloc.start()
    try:
        report = validate_file(src)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (report.errors[0].line, report.records) == (2, 1)
    assert "the record that starts on this line is longer than 16 MB" in report.errors[0].message
    assert peak < 120 * MB, peak


def test_a_csv_cell_over_the_record_limit_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "huge.csv"
    src.write_bytes(b"question,answer\n" + b"q," + b"a" * (17 * MB) + b"\nq,a\n")
    report = validate_file(src)
    assert report.errors[0].line == 2 and "a cell is longer than 16 MB" in report.errors[0].message
