# Chinese text here uses full-width punctuation on purpose: it is what our users write.

"""Tables as training data: CSV / TSV and Excel sheets, row numbers as a spreadsheet shows
them, columns mapped to roles, and `inspect_file`'s preview of any upload."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from app.datasets.parsing import ValidationReport, inspect_file, validate_file


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def workbook(
    tmp_path: Path, rows: list[list[Any]], name: str = "data.xlsx", **options: Any
) -> Path:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = options.get("title", "问答")
    for row in rows:
        sheet.append(row)
    for cells in options.get("merge", ()):
        sheet.merge_cells(cells)
    for title in options.get("more_sheets", ()):
        book.create_sheet(title)
    path = tmp_path / name
    book.save(path)
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]


def errors(report: ValidationReport) -> list[tuple[int, str | None]]:
    return [(e.line, e.field) for e in report.errors]


# --- CSV -------------------------------------------------------------------------------------


def test_csv_with_alpaca_columns_is_read_and_rows_are_numbered_as_a_spreadsheet_shows_them(
    tmp_path: Path,
) -> None:
    text = (
        "instruction,input,output\n"
        '把这句话翻译成英文。,今天天气很好。,"The weather is nice today."\n'
        '写一首诗。,,"床前明月光，\n疑是地上霜。"\n'  # a cell over two lines is still one row
        "总结一下。,,\n"
    )
    dest = tmp_path / "out.jsonl"
    report = validate_file(write(tmp_path, "data.csv", text), dest=dest, drop_invalid=True)
    assert (report.container, report.format, report.records) == ("csv", "alpaca", 2)
    assert errors(report) == [(4, "output")]
    written = read_jsonl(dest)
    assert [r["line"] for r in written] == [2, 3]
    assert written[0]["messages"][0]["content"] == "把这句话翻译成英文。\n\n今天天气很好。"
    assert written[1]["messages"][1]["content"] == "床前明月光，\n疑是地上霜。"


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_the_delimiter_is_found_by_looking_at_the_rows(tmp_path: Path, delimiter: str) -> None:
    rows = [["question", "answer"], ["一加一？", "二 (2)"], ["a, b; c | d", "都有"]]
    text = "".join(
        delimiter.join(f'"{cell}"' if delimiter in cell or "," in cell else cell for cell in row)
        + "\n"
        for row in rows
    )
    report = validate_file(write(tmp_path, "qa.csv", text))
    assert report.ok and report.records == 2, report.errors


def test_a_tsv_file_is_read_with_tabs(tmp_path: Path) -> None:
    text = "prompt\tcompletion\n你好，世界\t你好！\n"
    report = validate_file(write(tmp_path, "data.tsv", text))
    assert (report.container, report.format, report.records) == ("csv", "prompt_completion", 1)


def test_a_table_without_a_file_name_suffix_is_recognised(tmp_path: Path) -> None:
    text = "question;answer\n一加一？;二\n二加二？;四\n"
    report = validate_file(write(tmp_path, "upload-7f3a", text))
    assert (report.container, report.records) == ("csv", 2)
    as_json = validate_file(write(tmp_path, "upload-8b", text), filename="data.jsonl")
    assert as_json.container is None and "does not look like JSON" in as_json.errors[0].message


def test_csv_with_a_byte_order_mark_and_windows_line_endings(tmp_path: Path) -> None:
    text = '\ufeffquestion,answer\r\n"第一行\r\n第二行",好\r\n'
    dest = tmp_path / "out.jsonl"
    report = validate_file(write(tmp_path, "excel.csv", text), dest=dest)
    assert report.ok and report.mapping == {"prompt": "question", "completion": "answer"}
    assert read_jsonl(dest)[0]["messages"][0]["content"] == "第一行\n第二行"


def test_a_row_with_too_few_or_too_many_cells_is_located(tmp_path: Path) -> None:
    text = "question,answer,source\n一,二,书\n三,四\n五,六,七,八\n九,十,书,,\n"
    report = validate_file(write(tmp_path, "qa.csv", text))
    assert errors(report) == [(3, None), (4, None)]
    assert report.errors[0].message.startswith(
        "this row has 2 cells but the header (row 1) has 3 columns"
    )
    assert "contains the comma `,` without quotes" in report.errors[1].message
    assert report.records == 2  # a trailing empty cell (row 5) is only a trailing comma


def test_a_quote_that_is_never_closed_is_located(tmp_path: Path) -> None:
    text = 'question,answer\n一,二\n"三,四\n五,六\n'
    report = validate_file(write(tmp_path, "qa.csv", text), drop_invalid=True)
    assert errors(report) == [(3, None)]
    assert "is never closed" in report.errors[0].message
    assert not report.ok  # the rest of the file is lost in that cell: not droppable


def test_a_row_that_is_not_utf8_is_located_and_the_others_read(tmp_path: Path) -> None:
    raw = "question,answer\n一,二\n".encode() + "三,四\n".encode("gbk") + "五,六\n".encode()
    report = validate_file(write(tmp_path, "qa.csv", raw))
    assert errors(report) == [(3, None)]
    assert report.errors[0].message.startswith("this row is not UTF-8 text")
    assert report.records == 2


def test_a_csv_saved_as_gbk_gets_one_error_for_the_file(tmp_path: Path) -> None:
    raw = "问题,答案\n一加一等于几？,二\n".encode("gbk")
    report = validate_file(write(tmp_path, "qa.csv", raw))
    assert errors(report) == [(1, None)] and "GBK" in report.errors[0].message


def test_two_columns_with_the_same_name_are_refused(tmp_path: Path) -> None:
    report = validate_file(write(tmp_path, "qa.csv", "question,answer,answer\n一,二,三\n"))
    assert errors(report) == [(1, None)]
    assert report.errors[0].message == (
        "two columns are named `answer` (columns B and C): give each column its own name"
    )


def test_columns_are_mapped_to_roles(tmp_path: Path) -> None:
    text = (
        "编号,问题,补充,回答,人设\n1,翻译成英文,你好,Hello,你是翻译。\n2,再见怎么说？,,Goodbye,\n"
    )
    mapping = {"prompt": "问题", "input": "补充", "completion": "回答", "system": "人设"}
    dest = tmp_path / "out.jsonl"
    report = validate_file(write(tmp_path, "qa.csv", text), dest=dest, mapping=mapping)
    assert report.ok and (report.format, report.mapping) == ("columns", mapping)
    assert [r["messages"] for r in read_jsonl(dest)] == [
        [
            {"role": "system", "content": "你是翻译。"},
            {"role": "user", "content": "翻译成英文\n\n你好"},
            {"role": "assistant", "content": "Hello"},
        ],
        [{"role": "user", "content": "再见怎么说？"}, {"role": "assistant", "content": "Goodbye"}],
    ]


def test_an_empty_mapped_cell_is_an_error_at_its_row_naming_the_column(tmp_path: Path) -> None:
    text = "问题,回答\n一加一？,二\n二加二？,\n"
    report = validate_file(
        write(tmp_path, "qa.csv", text), mapping={"prompt": "问题", "completion": "回答"}
    )
    assert errors(report) == [(3, "回答")]
    assert report.errors[0].message.startswith("`回答` is empty")


def test_a_mapping_naming_a_missing_column_is_one_error_listing_the_columns(
    tmp_path: Path,
) -> None:
    text = "问题,回答\n" + "一加一？,二\n" * 100
    report = validate_file(
        write(tmp_path, "qa.csv", text), mapping={"prompt": "问题", "completion": "答案"}
    )
    assert errors(report) == [(1, "答案")]
    assert report.errors[0].message == (
        "the mapping names the column `答案`, which the file does not have; its columns are "
        "`问题`, `回答`: choose among those"
    )


def test_a_table_with_unknown_columns_asks_for_a_mapping_once(tmp_path: Path) -> None:
    text = "问题,回答\n" + "一加一？,二\n" * 5
    report = validate_file(write(tmp_path, "qa.csv", text))
    assert errors(report) == [(1, None)] and report.records == 0
    assert report.errors[0].message.startswith(
        "could not tell which columns to train on: the columns are `问题`, `回答`; choose which "
        "column holds the prompt and which the answer"
    )


# --- XLSX ------------------------------------------------------------------------------------


def test_the_first_sheet_is_read_with_cells_as_the_text_excel_shows(tmp_path: Path) -> None:
    rows: list[list[Any]] = [
        ["instruction", "input", "output", "日期", "数"],
        ["今天几号？", None, "五月一日", dt.datetime(2024, 5, 1), 3.0],
        ["现在几点？", "", "下午", dt.datetime(2024, 5, 1, 13, 45), 0.1 + 0.2],
        ["对吗？", 12, True, dt.date(2024, 1, 2), 42],
    ]
    path = workbook(tmp_path, rows, more_sheets=["说明"])
    dest = tmp_path / "out.jsonl"
    report = validate_file(path, dest=dest)
    assert (report.container, report.format, report.records) == ("xlsx", "alpaca", 3)
    assert report.warnings == ["only the first sheet (`问答`) was read; the workbook has 2 sheets"]
    assert [r["line"] for r in read_jsonl(dest)] == [2, 3, 4]
    assert read_jsonl(dest)[2]["messages"] == [
        {"role": "user", "content": "对吗？\n\n12"},
        {"role": "assistant", "content": "TRUE"},
    ]
    preview = inspect_file(path)
    assert [(r["日期"], r["数"]) for r in preview.rows] == [
        ("2024-05-01", "3"),
        ("2024-05-01 13:45:00", "0.3"),
        ("2024-01-02", "42"),
    ]


def test_merged_cells_are_reported_with_their_range(tmp_path: Path) -> None:
    rows: list[list[Any]] = [
        ["prompt", "completion"],
        ["一", "答"],
        ["二", "答"],
        ["三", None],
        ["四", None],
    ]
    path = workbook(tmp_path, rows, merge=["B3:B5"])
    dest = tmp_path / "out.jsonl"
    report = validate_file(path, dest=dest, drop_invalid=True)
    assert report.errors[0].line == 3 and report.errors[0].field == "completion"
    assert report.errors[0].message == (
        "cells B3:B5 are merged: unmerge them and fill in the value on each row"
    )
    assert not report.ok and not dest.exists()  # merged cells are never dropped silently


def test_rows_above_the_header_and_blank_rows_keep_the_sheet_numbering(tmp_path: Path) -> None:
    rows: list[list[Any]] = [
        [],
        ["instruction", "output"],
        ["一加一？", "二"],
        [],
        ["二加二？", None],
    ]
    report = validate_file(workbook(tmp_path, rows))
    assert errors(report) == [(5, "output")]


def test_a_value_in_a_column_without_a_name_is_located(tmp_path: Path) -> None:
    rows: list[list[Any]] = [["question", "answer"], ["一", "二"], ["三", "四", "备注"]]
    report = validate_file(workbook(tmp_path, rows))
    assert errors(report) == [(3, None)]
    assert report.errors[0].message.startswith("column C has a value in this row but no name")


def test_a_workbook_under_another_name_is_still_read_as_a_workbook(tmp_path: Path) -> None:
    path = workbook(tmp_path, [["prompt", "completion"], ["你好", "你好！"]], name="upload.bin")
    assert validate_file(path, filename="data.jsonl").container == "xlsx"


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("old.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(500), "old Excel workbook (.xls)"),
        ("fake.xlsx", b"PK\x03\x04" + bytes(300), "damaged or is not really an .xlsx"),
        ("fake.xlsx", "<html><table><tr><td>一</td></tr></table></html>", "is not an Excel"),
    ],
)
def test_a_file_that_only_looks_like_a_workbook_gets_one_clear_error(
    tmp_path: Path, name: str, content: str | bytes, expected: str
) -> None:
    report = validate_file(write(tmp_path, name, content))
    assert errors(report) == [(1, None)] and expected in report.errors[0].message


# --- previews --------------------------------------------------------------------------------


def test_inspect_a_jsonl_file(tmp_path: Path) -> None:
    records = [{"question": f"问题{i}", "answer": "很长" * 400, "n": i} for i in range(30)]
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    preview = inspect_file(write(tmp_path, "qa.jsonl", text), rows=5)
    assert preview.container == "jsonl" and preview.problem is None
    assert preview.columns == ["question", "answer", "n"]
    assert len(preview.rows) == 5 and preview.rows[4]["n"] == "4"
    assert len(preview.rows[0]["answer"]) == 300 and preview.rows[0]["answer"].endswith("…")
    assert preview.detected_format == "prompt_completion"
    assert preview.suggested_mapping == {"prompt": "question", "completion": "answer"}


def test_inspect_a_table_with_chinese_headers_suggests_a_mapping(tmp_path: Path) -> None:
    preview = inspect_file(write(tmp_path, "qa.csv", "编号,问题,答案\n1,一加一？,二\n"))
    assert (preview.container, preview.columns) == ("csv", ["编号", "问题", "答案"])
    assert preview.rows == [{"编号": "1", "问题": "一加一？", "答案": "二"}]
    assert preview.detected_format is None
    assert preview.suggested_mapping == {"prompt": "问题", "completion": "答案"}


def test_inspect_shows_nested_values_as_json_and_alpaca_columns_as_a_mapping(
    tmp_path: Path,
) -> None:
    text = json.dumps([{"instruction": "你好", "input": "", "output": "嗨", "tags": ["问候"]}])
    preview = inspect_file(write(tmp_path, "data.json", text))
    assert preview.rows == [
        {"instruction": "你好", "input": "", "output": "嗨", "tags": '["问候"]'}
    ]
    assert preview.suggested_mapping == {
        "prompt": "instruction",
        "input": "input",
        "completion": "output",
    }


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "line 1: the file is empty"),
        ("就是一些文字\n".encode(), "line 1: the file does not look like JSON, JSONL or CSV"),
        ("问题,答案\n".encode(), "line 2: the table has a header (row 1) but no rows of data"),
        (b'[{"a": 1},\n{"b": }]', "line 2: invalid JSON at column 7"),
    ],
)
def test_inspect_says_why_a_file_cannot_be_read(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    preview = inspect_file(write(tmp_path, "upload.csv", content), filename="upload")
    assert preview.problem is not None and preview.problem.startswith(expected)
