"""Zip bombs dressed as workbooks are refused from the sizes the zip lists, before any sheet is
unpacked or parsed; real workbooks pass the same check."""

from __future__ import annotations

import zipfile
from pathlib import Path

import openpyxl
import pytest

from app.datasets.parsing import inspect_file, validate_file
from app.datasets.xlsx import DAMAGED
from app.datasets.zip_limits import (
    MAX_RATIO,
    MAX_UNPACKED_BYTES,
    RATIO_CHECKED_FROM,
    unpacking_problem,
)
from tests.zip_bombs import MB, SHEET, bomb_workbook, declare_size, workbook

PACKED_TIGHT = "this workbook is packed far more tightly than real spreadsheets are"
AS_CSV = "export the sheet as CSV (in Excel: File > Save As > CSV UTF-8) and upload that"


def member(name: str, unpacked: int, packed: int) -> zipfile.ZipInfo:
    """A zip member as its central directory lists it."""
    info = zipfile.ZipInfo(name)
    info.file_size, info.compress_size = unpacked, packed
    return info


def test_zip_bomb_workbook_is_refused_before_parsing(tmp_path: Path) -> None:
    bomb = bomb_workbook(tmp_path)  # 50 MB of rows in some 70 KB
    assert bomb.stat().st_size < 100 * 1024
    out = tmp_path / "out"
    out.mkdir()
    report = validate_file(bomb, dest=out / "records.jsonl", errors_file=out / "errors.csv")
    assert not report.ok
    assert report.records == 0, "not one of its 23,000 rows was parsed"
    assert [(e.line, e.field) for e in report.errors] == [(1, None)]
    message = report.errors[0].message
    assert message.startswith(PACKED_TIGHT)
    assert "xl/worksheets/sheet1.xml, would grow 782 times, to 50 MB, when unpacked" in message
    assert message.endswith(AS_CSV)
    assert sorted(p.name for p in out.iterdir()) == ["errors.csv"]  # no records, no temp file
    preview = inspect_file(bomb)
    assert preview.problem is not None and preview.problem.startswith(f"line 1: {PACKED_TIGHT}")


def test_a_workbook_listing_more_than_1_gb_unpacked_is_refused_without_unpacking(
    tmp_path: Path,
) -> None:
    book = workbook(tmp_path)
    declare_size(book, SHEET, 1536 * MB)  # the listed size only: the data stays a few bytes
    report = validate_file(book)
    assert (report.ok, report.records) == (False, 0)
    assert str(report.errors[0]).startswith(
        "line 1: this workbook would unpack to 1.5 GB of data, more than the 1 GB tunelab reads "
        "from one workbook: split it into smaller workbooks, or export the sheet as CSV"
    )


def test_many_small_members_adding_up_past_the_limit_are_refused() -> None:
    # each one too small for the ratio rule, together over the total
    members = [member(f"xl/media/{i}.xml", RATIO_CHECKED_FROM, 1024) for i in range(1025)]
    assert MAX_UNPACKED_BYTES == 1024**3
    problem = unpacking_problem(members)
    assert problem is not None and problem.startswith("this workbook would unpack to 1 GB")
    assert unpacking_problem(members[:1024]) is None  # exactly the limit is allowed


def test_the_total_limit_is_a_parameter() -> None:
    members = [member("xl/workbook.xml", 2000, 1000)]
    assert unpacking_problem(members, max_unpacked=1999) is not None
    assert unpacking_problem(members, max_unpacked=2000) is None


@pytest.mark.parametrize(
    ("unpacked", "packed", "refused"),
    [
        (RATIO_CHECKED_FROM + 1, (RATIO_CHECKED_FROM + 1) // (MAX_RATIO + 1), True),
        (64 * MB, 0, True),  # nothing packed at all: an endless ratio
        (MAX_RATIO * MB, MB, False),  # exactly the largest ratio allowed
        (RATIO_CHECKED_FROM, 10, False),  # a tiny member may shrink as far as it likes
    ],
)
def test_a_large_member_that_shrank_more_than_100_times_is_refused(
    unpacked: int, packed: int, refused: bool
) -> None:
    problem = unpacking_problem([member(SHEET, unpacked, packed)])
    assert (problem is not None) is refused, problem
    assert problem is None or (problem.startswith(PACKED_TIGHT) and problem.endswith(AS_CSV))


def test_a_real_workbook_of_identical_rows_is_well_within_the_limits(tmp_path: Path) -> None:
    """Identical rows are the most a real sheet packs: some 20 times, far from 100."""
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["instruction", "input", "output"])
    for _ in range(20_000):
        sheet.append(["把这句话翻译成英文。", "", "Translate this sentence."])
    book.save(tmp_path / "same.xlsx")
    with zipfile.ZipFile(tmp_path / "same.xlsx") as archive:
        members = archive.infolist()
    sheet_xml = next(m for m in members if m.filename == SHEET)
    assert sheet_xml.file_size > RATIO_CHECKED_FROM  # so the ratio rule did look at it
    assert unpacking_problem(members) is None


def test_zipfile_never_yields_more_than_a_member_lists(tmp_path: Path) -> None:
    """The claim the limits rest on: a member whose header says 100 KB gives at most 100 KB,
    even when its data inflates to 50 MB, and then fails its CRC check."""
    liar = bomb_workbook(tmp_path, name="liar.xlsx")
    declare_size(liar, SHEET, 100_000)
    read = 0
    with (
        zipfile.ZipFile(liar) as archive,
        archive.open(SHEET) as xml,
        pytest.raises(zipfile.BadZipFile, match="Bad CRC-32"),
    ):
        while chunk := xml.read(1000):
            read += len(chunk)
    assert 90_000 < read <= 100_000


def test_a_workbook_whose_sheet_lists_a_false_size_is_refused_as_damaged(tmp_path: Path) -> None:
    liar = bomb_workbook(tmp_path, name="liar.xlsx")
    declare_size(liar, SHEET, 4096)  # small enough to pass the limits: zipfile stops there
    report = validate_file(liar)
    assert (report.ok, report.records) == (False, 0)
    assert report.errors[0].line == 1 and DAMAGED in report.errors[0].message
