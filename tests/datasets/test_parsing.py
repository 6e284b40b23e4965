# Chinese text here uses full-width punctuation on purpose: it is what our users write.

"""Uploaded training files: every problem found with its line and field, valid files normalized.

Real files on disk: the broken fixtures in tests/data/broken, files written to tmp_path, and
the shared real datasets.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from app.core import errors
from app.datasets import containers as dataset_containers
from app.datasets import parsing as dataset_parsing
from app.datasets.parsing import (
    InvalidDataset,
    RecordError,
    ValidationReport,
    validate_file,
    validate_file_or_raise,
)

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
BROKEN = Path(__file__).resolve().parents[1] / "data" / "broken"
needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"shared datasets not found at {SHARED_DATA}"
)


def alpaca(i: int, **fields: Any) -> dict[str, Any]:
    record = {
        "instruction": f"把第{i}句话翻译成英文。",
        "input": f"第{i}句：今天天气很好。",
        "output": f"Sentence {i}: the weather is nice today.",
    }
    record.update(fields)
    return {k: v for k, v in record.items() if v is not ...}


def chat(*turns: tuple[str, Any], **fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": role, "content": content} for role, content in turns], **fields}


def jsonl(*records: Any) -> str:
    return "".join(_dumps(r) + "\n" for r in records)


def _dumps(record: Any) -> str:
    text = json.dumps(record, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # half a surrogate pair can only be written as a \u escape
        return json.dumps(record)
    return text


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def only_error(report: ValidationReport) -> RecordError:
    assert report.error_count == 1, report.errors
    return report.errors[0]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    # split on \n only: answers may hold U+2028 or other characters splitlines() breaks at
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]


# --- valid files ---------------------------------------------------------------------------


def test_valid_alpaca_jsonl_is_ok_and_counts_records(tmp_path: Path) -> None:
    src = write(tmp_path, "data.jsonl", jsonl(*(alpaca(i) for i in range(5))))
    report = validate_file(src)
    assert report.ok
    assert (report.format, report.container, report.records) == ("alpaca", "jsonl", 5)
    assert report.errors == [] and report.warnings == []


def test_valid_chat_json_array_is_ok(tmp_path: Path) -> None:
    records = [chat(("user", f"问题{i}"), ("assistant", f"回答{i}")) for i in range(3)]
    report = validate_file(write(tmp_path, "chat.json", json.dumps(records, ensure_ascii=False)))
    assert report.ok
    assert (report.format, report.container, report.records) == ("chat", "json", 3)


def test_format_is_detected_from_content_not_file_name(tmp_path: Path) -> None:
    as_txt = validate_file(write(tmp_path, "data.txt", jsonl(alpaca(1))))
    array_named_jsonl = validate_file(write(tmp_path, "data.jsonl", json.dumps([alpaca(1)])))
    assert (as_txt.container, as_txt.ok) == ("jsonl", True)
    assert (array_named_jsonl.container, array_named_jsonl.ok) == ("json", True)


def test_blank_lines_are_skipped_but_still_counted_in_line_numbers(tmp_path: Path) -> None:
    text = "\n" + jsonl(alpaca(1)) + "\n   \n" + jsonl(alpaca(4, output=...))
    report = validate_file(write(tmp_path, "data.jsonl", text))
    assert report.records == 1
    assert (only_error(report).line, only_error(report).field) == (5, "output")


def test_utf8_bom_and_windows_line_endings_are_accepted(tmp_path: Path) -> None:
    bom = b"\xef\xbb\xbf"
    lines = [json.dumps(alpaca(i), ensure_ascii=False) for i in range(3)]
    src = write(tmp_path, "windows.jsonl", bom + "\r\n".join(lines).encode() + b"\r\n")
    dest = tmp_path / "out.jsonl"
    report = validate_file(src, dest=dest)
    assert report.ok and report.records == 3
    assert b"\r" not in dest.read_bytes()

    array = json.dumps([alpaca(1), alpaca(2)], ensure_ascii=False, indent=2).replace("\n", "\r\n")
    report = validate_file(write(tmp_path, "windows.json", bom + array.encode()))
    assert report.ok and report.records == 2


def test_windows_line_endings_do_not_shift_line_numbers(tmp_path: Path) -> None:
    text = jsonl(alpaca(1), alpaca(2), alpaca(3, output="")).replace("\n", "\r\n")
    report = validate_file(write(tmp_path, "windows.jsonl", b"\xef\xbb\xbf" + text.encode()))
    assert (only_error(report).line, only_error(report).field) == (3, "output")


def test_byte_order_mark_at_the_start_of_a_later_line_is_tolerated(tmp_path: Path) -> None:
    # What `cat a.jsonl b.jsonl` gives when both were saved by a Windows editor.
    part = b"\xef\xbb\xbf" + jsonl(alpaca(1)).encode()
    report = validate_file(write(tmp_path, "joined.jsonl", part + part.replace(b"1", b"2")))
    assert report.ok and report.records == 2


def test_unicode_line_separator_inside_text_does_not_shift_line_numbers(tmp_path: Path) -> None:
    # U+2028 is a line break to str.splitlines() but not to JSON or to the person's editor.
    text = jsonl(alpaca(1, output="第一行\u2028第二行\u0085第三行"), alpaca(2, output=...))
    assert "\u2028" in text
    report = validate_file(write(tmp_path, "sep.jsonl", text))
    assert report.records == 1
    assert only_error(report).line == 2

    array = json.dumps([alpaca(1, output="甲\u2028乙"), alpaca(2, output=...)], ensure_ascii=False)
    report = validate_file(write(tmp_path, "sep.json", array.replace("}, {", "},\n{")))
    assert only_error(report).line == 2


def test_sha256_is_of_the_raw_file_bytes(tmp_path: Path) -> None:
    raw = b"\xef\xbb\xbf" + jsonl(alpaca(1)).replace("\n", "\r\n").encode()
    report = validate_file(write(tmp_path, "data.jsonl", raw))
    assert report.sha256 == hashlib.sha256(raw).hexdigest()


# --- normalized output ---------------------------------------------------------------------


def test_valid_alpaca_is_written_to_dest_as_chat_messages(tmp_path: Path) -> None:
    records = [
        alpaca(1),
        alpaca(2, input=""),
        alpaca(
            3, input=None, system="你是一名翻译。", history=[["你好", "Hello"], ["谢谢", "Thanks"]]
        ),
    ]
    dest = tmp_path / "records.jsonl"
    report = validate_file(write(tmp_path, "data.jsonl", jsonl(*records)), dest=dest)
    assert report.ok
    assert read_jsonl(dest) == [
        {
            "messages": [
                {"role": "user", "content": "把第1句话翻译成英文。\n\n第1句：今天天气很好。"},
                {"role": "assistant", "content": "Sentence 1: the weather is nice today."},
            ],
            "line": 1,
        },
        {
            "messages": [
                {"role": "user", "content": "把第2句话翻译成英文。"},
                {"role": "assistant", "content": "Sentence 2: the weather is nice today."},
            ],
            "line": 2,
        },
        {
            "messages": [
                {"role": "system", "content": "你是一名翻译。"},
                {"role": "user", "content": "你好"},
                {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": "谢谢"},
                {"role": "assistant", "content": "Thanks"},
                {"role": "user", "content": "把第3句话翻译成英文。"},
                {"role": "assistant", "content": "Sentence 3: the weather is nice today."},
            ],
            "line": 3,
        },
    ]


def test_normalized_file_keeps_chinese_readable_and_uses_unix_line_endings(tmp_path: Path) -> None:
    dest = tmp_path / "records.jsonl"
    validate_file(write(tmp_path, "data.jsonl", jsonl(alpaca(1), alpaca(2))), dest=dest)
    raw = dest.read_bytes()
    assert "今天天气很好".encode() in raw
    assert raw.count(b"\n") == 2 and b"\r" not in raw


def test_valid_chat_is_written_with_only_role_and_content(tmp_path: Path) -> None:
    record = chat(("system", "简洁回答。"), ("user", "一加一？"), ("assistant", "二"), name="x")
    record["messages"][1]["weight"] = 0
    dest = tmp_path / "records.jsonl"
    assert validate_file(write(tmp_path, "chat.jsonl", jsonl(record)), dest=dest).ok
    assert read_jsonl(dest) == [
        {
            "messages": [
                {"role": "system", "content": "简洁回答。"},
                {"role": "user", "content": "一加一？"},
                {"role": "assistant", "content": "二"},
            ],
            "line": 1,
        }
    ]


def test_dest_is_not_written_and_no_temp_file_is_left_when_invalid(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    # Many valid records first, so the writer has already started when the bad one comes.
    records = [alpaca(i) for i in range(300)] + [alpaca(300, output="")]
    report = validate_file(write(tmp_path, "data.jsonl", jsonl(*records)), dest=out / "r.jsonl")
    assert not report.ok and report.records == 300
    assert list(out.iterdir()) == []


def test_existing_dest_is_left_alone_when_invalid(tmp_path: Path) -> None:
    dest = tmp_path / "r.jsonl"
    dest.write_text("earlier\n")
    validate_file(write(tmp_path, "bad.jsonl", "oops"), dest=dest)
    assert dest.read_text() == "earlier\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "r.jsonl"]


def test_dest_is_not_written_for_a_file_without_records(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    report = validate_file(write(tmp_path, "empty.json", "[]"), dest=out / "r.jsonl")
    assert not report.ok
    assert list(out.iterdir()) == []


# --- syntax --------------------------------------------------------------------------------


def test_upload_reports_line_of_first_bad_record() -> None:
    report = validate_file(BROKEN / "json_error_on_line_7.jsonl")
    error = only_error(report)
    assert (error.line, error.field) == (7, None)
    assert error.message.startswith("invalid JSON at column ")
    assert "comma is missing" in error.message
    assert report.records == 7 and report.format == "alpaca"


def test_syntax_errors_are_reported_on_every_bad_line_and_valid_lines_still_count(
    tmp_path: Path,
) -> None:
    text = jsonl(alpaca(1)) + '{"instruction": "a",\n' + jsonl(alpaca(3)) + "{oops}\n"
    report = validate_file(write(tmp_path, "data.jsonl", text))
    assert [e.line for e in report.errors] == [2, 4]
    assert report.records == 2


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"instruction"："你好", "output": "好"}', "`：` is a full-width (Chinese) character"),
        ('{"instruction": "你好"， "output": "好"}', "`，` is a full-width (Chinese) character"),
        ('{\u201cinstruction\u201d: "你好", "output": "好"}', "full-width (Chinese) character"),
        ("{'instruction': 'a', 'output': 'b'}", "double quotes"),
        ('{"instruction": "a", "output": "b",}', "comma right before `}`"),
        ('{"instruction": "a", "output": True}', "`True` is not JSON: write `true`"),
        ('{"instruction": "a", "output": "C:\\path"}', "backslash"),
        ('{"instruction": "a", "output": "b"},', "remove the comma at the end of the line"),
        ('{"instruction": "a", "output": "说"你好""}', "double quote that is not escaped"),
        ('{"instruction": "a", "output": "b" "c": 1}', "comma is missing"),
    ],
)
def test_json_syntax_errors_are_explained_in_plain_words(
    tmp_path: Path, line: str, expected: str
) -> None:
    report = validate_file(write(tmp_path, "data.jsonl", jsonl(alpaca(1)) + line + "\n"))
    error = only_error(report)
    assert error.line == 2
    assert expected in error.message


def test_syntax_error_column_counts_characters_not_bytes(tmp_path: Path) -> None:
    text = '{"instruction": "中文中文" "output": "x"}\n'
    report = validate_file(write(tmp_path, "data.jsonl", text))
    # the decoder stops at the `"` after the missing comma: character 24, byte 32
    assert only_error(report).message.startswith("invalid JSON at column 24:")


def test_a_record_that_is_not_an_object_is_reported(tmp_path: Path) -> None:
    text = jsonl(alpaca(1), ["把这句话翻译成英文。", "Hello"], alpaca(3), "文本", 42)
    report = validate_file(write(tmp_path, "data.jsonl", text))
    assert [(e.line, e.field) for e in report.errors] == [(2, None), (4, None), (5, None)]
    assert "must be a JSON object" in report.errors[0].message
    assert "a list of 2 items" in report.errors[0].message
    assert report.records == 2


def test_file_that_is_neither_json_nor_a_table_gets_one_clear_error(tmp_path: Path) -> None:
    text = "我的训练数据\n问：你好\n答：你好！\n"
    report = validate_file(write(tmp_path, "notes.txt", text))
    error = only_error(report)
    assert error.line == 1 and report.container is None
    assert "does not look like JSON, JSONL or CSV" in error.message
    assert "`我的训练数据`" in error.message


def test_pretty_printed_object_in_jsonl_gives_one_clear_error() -> None:
    report = validate_file(BROKEN / "pretty_printed_object.jsonl")
    error = only_error(report)
    assert error.line == 1
    assert "single JSON object (lines 1 to 5), not a list of records" in error.message


def test_top_level_object_holding_the_records_says_where_they_are(tmp_path: Path) -> None:
    text = json.dumps({"version": 1, "data": [alpaca(1), alpaca(2)]}, ensure_ascii=False, indent=2)
    error = only_error(validate_file(write(tmp_path, "data.json", text)))
    assert "the records seem to be the list under `data`" in error.message


def test_pretty_printed_records_one_after_another_give_one_clear_error(tmp_path: Path) -> None:
    text = "\n".join(json.dumps(alpaca(i), ensure_ascii=False, indent=2) for i in range(50))
    error = only_error(validate_file(write(tmp_path, "data.jsonl", text)))
    assert error.line == 1
    assert "spread over several lines (the first one spans lines 1 to 5)" in error.message


def test_cut_off_first_line_followed_by_whole_records_is_just_one_bad_record(
    tmp_path: Path,
) -> None:
    text = '{"instruction": "把这句话翻译成英文。", "out\n' + jsonl(alpaca(2), alpaca(3))
    report = validate_file(write(tmp_path, "data.jsonl", text))
    assert only_error(report).line == 1
    assert report.records == 2


def test_single_line_json_object_file_is_jsonl_with_one_record(tmp_path: Path) -> None:
    report = validate_file(write(tmp_path, "one.json", json.dumps(alpaca(1))))
    assert report.ok and report.container == "jsonl" and report.records == 1


# --- JSON arrays ---------------------------------------------------------------------------


def test_json_array_elements_get_the_line_they_start_on(tmp_path: Path) -> None:
    records = [alpaca(1), alpaca(2), alpaca(3, output=...), alpaca(4, input=7)]
    text = json.dumps(records, ensure_ascii=False, indent=2)
    assert text.splitlines()[11] == "  {"  # the third record starts on line 12
    report = validate_file(write(tmp_path, "data.json", text))
    assert [(e.line, e.field) for e in report.errors] == [(12, "output"), (16, "input")]
    assert report.records == 2


def test_json_array_syntax_error_reports_line_and_column(tmp_path: Path) -> None:
    text = json.dumps([alpaca(1), alpaca(2)], ensure_ascii=False, indent=2)
    lines = text.splitlines()
    assert lines[8].startswith('    "input"')
    lines[8] = lines[8].rstrip(",")  # line 9 loses its comma
    report = validate_file(write(tmp_path, "data.json", "\n".join(lines)))
    error = only_error(report)
    assert error.line == 10  # the decoder notices at the next field
    assert error.message.startswith("invalid JSON at column 5: a comma is missing")
    assert report.records == 1  # the record before the error still counts


@pytest.mark.parametrize(
    ("text", "line", "expected"),
    [
        ('[\n {"instruction": "a", "output": "bb"},\n]', 3, "comma right before `]`"),
        (
            '[\n {"instruction": "a", "output": "bb"}\n {"instruction": "c", "output": "dd"}\n]',
            3,
            "a comma is missing between this record and the one before it (which ends on line 2)",
        ),
        (
            '[\n {"instruction": "a", "output": "bb"},\n {"instruction": "c", "output": "dd"}\n',
            4,
            "the file ends before the list is closed",
        ),
        (
            '[\n {"instruction": "a", "output": "bb"}\n]\n[]',
            4,
            "more after the `]` that closes the list",
        ),
        ("[\n]\n", 1, "the list is empty"),
    ],
)
def test_json_array_structure_errors_are_explained(
    tmp_path: Path, text: str, line: int, expected: str
) -> None:
    error = only_error(validate_file(write(tmp_path, "data.json", text)))
    assert error.line == line
    assert expected in error.message


@pytest.mark.parametrize("chunk", [7, 64, 1 << 20])
def test_json_array_is_streamed_in_chunks_and_keeps_lines_and_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    # tiny chunks cut every value, string, number and \u escape somewhere
    monkeypatch.setattr(dataset_containers, "READ_CHUNK", chunk)
    records = [
        alpaca(i, output=f"答案{i}\u00e9 " * (i % 7) + "结尾", n=12345.5e-3) for i in range(60)
    ]
    records[41] = alpaca(41, output=...)
    text = json.dumps(records, ensure_ascii=bool(chunk % 2), indent=1)
    dest = tmp_path / "out.jsonl"
    report = validate_file(write(tmp_path, "data.json", text), dest=dest, drop_invalid=True)
    starts = [number for number, line in enumerate(text.splitlines(), 1) if line == " {"]
    assert [(e.line, e.field) for e in report.errors] == [(starts[41], "output")]
    assert report.ok and (report.records, report.dropped) == (59, 1)
    written = read_jsonl(dest)
    assert [r["line"] for r in written] == starts[:41] + starts[42:]
    assert written[5]["messages"][1]["content"] == records[5]["output"]

    # a syntax error far down the file: the same line, column and words as decoding it whole
    at = -1
    for _ in range(45):
        at = text.index('"input"', at + 1)
    broken = text[:at] + '"input" "x"' + text[at + len('"input"') :]
    with pytest.raises(json.JSONDecodeError) as whole:
        json.loads(broken)
    report = validate_file(write(tmp_path, "broken.json", broken))
    assert report.unusable and report.error_count == 2  # record 41, then the syntax error
    error = report.errors[-1]
    assert (error.line, error.message) == (
        whole.value.lineno,
        dataset_containers.syntax_message(whole.value),
    )
    assert error.message.startswith("invalid JSON at column 11: a `:` is missing")


# --- empty, binary and other encodings -----------------------------------------------------


def test_empty_file_is_reported(tmp_path: Path) -> None:
    report = validate_file(write(tmp_path, "empty.jsonl", b""))
    error = only_error(report)
    assert (error.line, error.field) == (1, None)
    assert "the file is empty" in error.message
    assert not report.ok and report.format is None and report.container is None


@pytest.mark.parametrize("content", [b"\n\n   \n", b"\r\n\r\n", b"\xef\xbb\xbf\n \t\n"])
def test_file_with_only_blank_lines_is_reported(tmp_path: Path, content: bytes) -> None:
    report = validate_file(write(tmp_path, "blank.jsonl", content))
    assert "only blank lines" in only_error(report).message
    assert not report.ok


def test_png_image_is_reported_as_binary() -> None:
    error = only_error(validate_file(BROKEN / "image.png"))
    assert error.line == 1
    assert str(error) == (
        "line 1: this is not UTF-8 text: it looks like a binary file (an image, an archive or an "
        "old .xls spreadsheet?); upload a .json, .jsonl, .csv or .xlsx file"
    )


@pytest.mark.parametrize(
    "content",
    [
        random.Random(7).randbytes(4096),
        b"PK\x03\x04\x14\x00\x06\x00" + bytes(200),  # how every .xlsx / .zip starts
        jsonl(alpaca(1)).encode() + b"\x00\x00\x00\x01binary tail",
    ],
    ids=["random-bytes", "zip-header", "nul-bytes-after-text"],
)
def test_binary_files_get_a_single_error(tmp_path: Path, content: bytes) -> None:
    error = only_error(validate_file(write(tmp_path, "upload.jsonl", content)))
    assert "looks like a binary file" in error.message


def test_utf16_file_from_notepad_is_explained() -> None:
    error = only_error(validate_file(BROKEN / "notepad_utf16.jsonl"))
    assert error.line == 1 and "UTF-16" in error.message and "save it as UTF-8" in error.message


def test_chinese_text_saved_as_gbk_is_explained() -> None:
    error = only_error(validate_file(BROKEN / "chinese_gbk.jsonl"))
    assert error.line == 1
    assert "GBK" in error.message and "save the file as UTF-8" in error.message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (jsonl({"instruction": "Say hi", "output": "Hi"}).encode("utf-16-be"), "UTF-16"),
        (bytes(100), "looks like a binary file"),
        (
            jsonl({"instruction": "Traduis: café", "output": "coffee"}).encode("latin-1"),
            "this file is not UTF-8 text (byte 0xE9 at byte 30 of the line)",
        ),
    ],
    ids=["utf16-without-bom", "all-zero-bytes", "latin-1"],
)
def test_files_in_other_encodings_get_one_error_saying_what_they_are(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    error = only_error(validate_file(write(tmp_path, "data.jsonl", content)))
    assert error.line == 1 and expected in error.message


def test_json_array_with_a_gbk_line_reports_that_line(tmp_path: Path) -> None:
    text = json.dumps([alpaca(1), alpaca(2)], ensure_ascii=False, indent=2)
    raw = (
        "\n".join(text.splitlines()[:7]).encode()
        + b"\n"
        + "\n".join(text.splitlines()[7:]).encode("gbk")
    )
    error = only_error(validate_file(write(tmp_path, "data.json", raw)))
    assert error.line == 8  # the second record's `instruction`, its first Chinese text
    assert error.message.startswith("this file is not UTF-8 text: it looks like Chinese text")


def test_one_line_in_another_encoding_is_reported_and_the_rest_still_checked(
    tmp_path: Path,
) -> None:
    latin1 = json.dumps({"instruction": "Traduis: café", "output": "coffee"}, ensure_ascii=False)
    gbk = json.dumps(alpaca(4), ensure_ascii=False)
    raw = (
        jsonl(alpaca(1), alpaca(2)).encode()
        + latin1.encode("latin-1")
        + b"\n"
        + gbk.encode("gbk")
        + b"\n"
        + jsonl(alpaca(5)).encode()
    )
    report = validate_file(write(tmp_path, "data.jsonl", raw))
    assert [e.line for e in report.errors] == [3, 4]
    assert report.errors[0].message.startswith("this line is not UTF-8 text (byte 0xE9 at byte ")
    assert "GBK" in report.errors[1].message
    assert report.records == 3


def test_overlong_line_is_reported_without_reading_it_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dataset_containers, "MAX_RECORD_BYTES", 300)
    text = jsonl(alpaca(1), alpaca(2, output="很长" * 200), alpaca(3))
    size = len(text.splitlines()[1].encode())
    report = validate_file(write(tmp_path, "data.jsonl", text))
    error = only_error(report)
    assert error.line == 2
    assert f"this line is {size:,} bytes long; a record may be at most 300 bytes" in error.message
    assert report.records == 2


# --- deep nesting --------------------------------------------------------------------------


def test_deeply_nested_json_array_is_an_error_not_a_crash(tmp_path: Path) -> None:
    report = validate_file(write(tmp_path, "deep.json", "[" * 100_000))
    error = only_error(report)
    assert error.line == 1 and "nested too deeply" in error.message


def test_deeply_nested_jsonl_line_is_an_error_and_other_lines_are_checked(tmp_path: Path) -> None:
    deep = '{"instruction": ' + "[" * 100_000 + "\n"
    deep_object = '{"a": ' * 100_000 + "\n"
    report = validate_file(write(tmp_path, "deep.jsonl", jsonl(alpaca(1)) + deep + deep_object))
    assert [e.line for e in report.errors] == [2, 3]
    assert all("nested too deeply" in e.message for e in report.errors)
    assert report.records == 1


def test_deeply_nested_pretty_printed_garbage_is_an_error_not_a_crash(tmp_path: Path) -> None:
    text = "{\n" + '"a": {\n' * 100_000
    report = validate_file(write(tmp_path, "deep.jsonl", text))
    assert report.error_count >= 1 and not report.ok


# --- alpaca fields -------------------------------------------------------------------------


def test_record_without_output_reports_its_line_and_field() -> None:
    report = validate_file(BROKEN / "missing_output_on_line_3.jsonl")
    error = only_error(report)
    assert (error.line, error.field) == (3, "output")
    assert error.message == (
        "`output` is missing (the record has `input`, `instruction`): every record needs an answer"
    )
    assert report.records == 3


@pytest.mark.parametrize(
    ("fields", "field", "expected"),
    [
        ({"output": 42}, "output", "`output` must be text, but it is a number (42)"),
        ({"output": True}, "output", "`output` must be text, but it is true/false (true)"),
        ({"instruction": ["翻译"]}, "instruction", "must be text, but it is a list of 1 item"),
        ({"input": {"文本": "你好"}}, "input", "`input` must be text, but it is an object"),
        ({"system": 1}, "system", "`system` must be text"),
        ({"output": ""}, "output", "`output` is empty: every record needs an answer"),
        ({"output": " \n\u3000"}, "output", "`output` is empty"),
        ({"output": None}, "output", "`output` is empty (null)"),
        ({"instruction": ""}, "instruction", "`instruction` is empty: every record needs a task"),
        ({"instruction": ...}, "instruction", "`instruction` is missing"),
        ({"history": "你好"}, "history", "`history` must be a list of [question, answer] pairs"),
        ({"history": [["你好"]]}, "history[0]", "`history[0]` must be a pair [question, answer]"),
        ({"history": [["你好", ""]]}, "history[0][1]", "`history[0][1]` is empty"),
        ({"output": "\ud83d"}, "output", "broken character (an unpaired \\ud83d at character 1)"),
    ],
)
def test_alpaca_field_problems_name_the_field(
    tmp_path: Path, fields: dict[str, Any], field: str, expected: str
) -> None:
    text = jsonl(alpaca(1), alpaca(2, **fields))
    error = only_error(validate_file(write(tmp_path, "data.jsonl", text)))
    assert (error.line, error.field) == (2, field)
    assert expected in error.message


def test_every_wrong_field_of_a_record_is_reported(tmp_path: Path) -> None:
    text = jsonl(alpaca(1), {"instruction": "", "input": 3, "output": 42})
    report = validate_file(write(tmp_path, "data.jsonl", text))
    assert [(e.line, e.field) for e in report.errors] == [
        (2, "instruction"),
        (2, "input"),
        (2, "output"),
    ]
    assert report.records == 1


def test_optional_alpaca_fields_may_be_null_or_absent(tmp_path: Path) -> None:
    records = [
        {"instruction": "你好", "output": "你好！"},
        {"instruction": "你好", "input": None, "output": "你好！", "system": None, "history": None},
        {"instruction": "你好", "input": "", "output": "你好！", "system": "", "history": []},
    ]
    dest = tmp_path / "out.jsonl"
    assert validate_file(write(tmp_path, "data.jsonl", jsonl(*records)), dest=dest).ok
    expected = [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"}]
    assert [r["messages"] for r in read_jsonl(dest)] == [expected] * 3


# --- chat fields ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        (
            "bot",
            '`messages[1].role` is "bot": a role must be system, user or assistant'
            ' (use "assistant")',
        ),
        ("Assistant", '(use "assistant")'),
        ("助手", '`messages[1].role` is "助手": a role must be system, user or assistant'),
        ("", 'is "": a role must be'),
    ],
)
def test_chat_invalid_role_reports_the_turn(tmp_path: Path, role: str, expected: str) -> None:
    good = chat(("user", "你好"), ("assistant", "你好！"))
    text = jsonl(good, chat(("user", "你好"), (role, "你好！")))
    error = only_error(validate_file(write(tmp_path, "chat.jsonl", text)))
    assert (error.line, error.field) == (2, "messages[1].role")
    assert expected in error.message


def test_chat_with_sharegpt_roles_gets_a_suggestion_for_each_turn() -> None:
    report = validate_file(BROKEN / "chat_sharegpt_roles.jsonl")
    assert [(e.line, e.field) for e in report.errors] == [
        (2, "messages[0].role"),
        (2, "messages[1].role"),
    ]
    assert '(use "user")' in report.errors[0].message
    assert '(use "assistant")' in report.errors[1].message


@pytest.mark.parametrize(
    ("record", "field", "expected"),
    [
        (chat(("user", "你好")), "messages", "has no assistant turn"),
        (chat(("system", "简洁"), ("assistant", "你好")), "messages", "has no user turn"),
        (
            chat(("user", "你好"), ("assistant", "你好！"), ("user", "再见")),
            "messages",
            "must end with an assistant turn, but the last one (messages[2]) is user",
        ),
        (chat(("user", "你好"), ("assistant", "")), "messages[1].content", "is empty"),
        (chat(("user", "你好"), ("assistant", 5)), "messages[1].content", "must be text"),
        (
            {"messages": [{"role": "user"}]},
            "messages[0].content",
            "`messages[0].content` is missing",
        ),
        ({"messages": [{"content": "你好"}]}, "messages[0].role", "`messages[0].role` is missing"),
        ({"messages": ["你好"]}, "messages[0]", "must be an object with `role`"),
        ({"messages": {"user": "你好"}}, "messages", "`messages` must be a list of turns"),
        ({"messages": []}, "messages", "`messages` is empty"),
        ({"messages": None}, "messages", "but it is null (no value)"),
    ],
)
def test_chat_structure_problems_are_reported(
    tmp_path: Path, record: dict[str, Any], field: str, expected: str
) -> None:
    text = jsonl(chat(("user", "你好"), ("assistant", "你好！")), record)
    error = only_error(validate_file(write(tmp_path, "chat.jsonl", text)))
    assert (error.line, error.field) == (2, field)
    assert expected in error.message


def test_chat_turn_order_is_only_checked_once_the_turns_are_valid(tmp_path: Path) -> None:
    # a bad role must not also produce "no assistant turn"
    good = chat(("user", "你好"), ("assistant", "你好！"))
    text = jsonl(good, chat(("user", "你好"), ("bot", "嗨")))
    report = validate_file(write(tmp_path, "chat.jsonl", text))
    assert [e.field for e in report.errors] == ["messages[1].role"]


# --- formats -------------------------------------------------------------------------------


def test_a_record_of_another_format_is_an_error_when_the_format_was_chosen() -> None:
    report = validate_file(BROKEN / "mixed_formats.jsonl", format="alpaca")
    assert report.format == "alpaca"
    error = only_error(report)
    assert (error.line, error.field) == (3, None)
    assert str(error).startswith(
        "line 3: this record looks like chat (it has `messages`) but the file was declared as "
        "alpaca"
    )
    assert report.records == 3


def test_a_file_mixing_formats_is_read_record_by_record_with_a_warning(tmp_path: Path) -> None:
    dest = tmp_path / "out.jsonl"
    report = validate_file(BROKEN / "mixed_formats.jsonl", dest=dest)
    assert report.ok and report.errors == []
    assert (report.format, report.formats) == ("alpaca", {"alpaca": 3, "chat": 1})
    assert report.warnings == [
        "the file mixes record formats (3 alpaca, 1 chat; e.g. line 3 is chat); each record "
        "was converted according to its own format"
    ]
    assert [r["line"] for r in read_jsonl(dest)] == [1, 2, 3, 4]


def test_the_format_most_records_have_wins_even_when_the_first_record_is_odd(
    tmp_path: Path,
) -> None:
    first = chat(("user", "你好"), ("assistant", "你好！"))
    text = jsonl(first, *(alpaca(i) for i in range(5)))
    report = validate_file(write(tmp_path, "data.jsonl", text))
    assert report.format == "alpaca" and report.formats == {"chat": 1, "alpaca": 5}
    assert report.ok and report.records == 6


def test_declared_format_overrides_detection(tmp_path: Path) -> None:
    text = jsonl(*(chat(("user", "你好"), ("assistant", "你好！")) for _ in range(2)), alpaca(3))
    report = validate_file(write(tmp_path, "data.jsonl", text), format="alpaca")
    assert report.format == "alpaca" and report.records == 1
    assert "but the file was declared as alpaca" in report.errors[0].message
    assert report.error_count == 2


def test_unknown_declared_format_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset format 'csv-ish'"):
        validate_file(write(tmp_path, "data.jsonl", jsonl(alpaca(1))), format="csv-ish")


def test_records_of_no_known_format_get_one_error_naming_their_fields(tmp_path: Path) -> None:
    text = jsonl(*({"问题": f"问题{i}", "答案": f"答案{i}"} for i in range(10)))
    report = validate_file(write(tmp_path, "qa.jsonl", text))
    error = only_error(report)
    assert report.format is None and report.records == 0 and not report.ok
    assert error.line == 1
    assert "this one has `答案`, `问题`" in error.message
    assert "an alpaca record needs `instruction` and `output`" in error.message
    assert "a chat record needs `messages`" in error.message


def test_records_with_fields_of_two_formats_are_not_guessed(tmp_path: Path) -> None:
    both = {"messages": [], "instruction": "你好"}
    error = only_error(validate_file(write(tmp_path, "data.jsonl", jsonl(both, both))))
    assert "fields of several formats" in error.message


# --- error limits, warnings, raising -------------------------------------------------------


def test_more_than_max_errors_lists_the_first_and_counts_all(tmp_path: Path) -> None:
    records = [alpaca(i, output=...) if i % 2 else alpaca(i) for i in range(500)]
    report = validate_file(write(tmp_path, "data.jsonl", jsonl(*records)))
    assert report.error_count == 250 and len(report.errors) == 200
    assert report.errors[0].line == 2 and report.errors[-1].line == 400
    assert report.records == 250

    fewer = validate_file(write(tmp_path, "data.jsonl", jsonl(*records)), max_errors=3)
    assert (fewer.error_count, len(fewer.errors)) == (250, 3)


def test_duplicate_records_are_counted_in_a_warning(tmp_path: Path) -> None:
    same_as_chat = chat(
        ("user", "把第1句话翻译成英文。\n\n第1句：今天天气很好。"),
        ("assistant", "Sentence 1: the weather is nice today."),
    )
    text = jsonl(alpaca(1), alpaca(2), alpaca(1), alpaca(1), alpaca(3))
    report = validate_file(write(tmp_path, "data.jsonl", text))
    assert report.ok and report.records == 5
    assert report.warnings == [
        "2 duplicate records: the same conversation as an earlier record (first: line 3 repeats "
        "line 1); duplicates are trained on more than once"
    ]
    # duplicates are judged on the normalized conversation
    chat_report = validate_file(
        write(tmp_path, "chat.jsonl", jsonl(same_as_chat, same_as_chat)), format="chat"
    )
    assert chat_report.warnings[0].startswith("1 duplicate record:")


def test_very_short_answers_are_counted_in_characters_not_bytes(tmp_path: Path) -> None:
    records = [alpaca(1, output="是"), alpaca(2, output="好的"), alpaca(3, output=" A ")]
    report = validate_file(write(tmp_path, "data.jsonl", jsonl(*records)))
    assert report.ok  # a warning, not an error
    assert report.warnings == [
        "2 records have very short answers (under 2 characters), e.g. line 1"
    ]


def test_zero_valid_records_is_never_ok(tmp_path: Path) -> None:
    report = validate_file(write(tmp_path, "data.json", "[]"))
    assert report.records == 0 and report.error_count == 1 and not report.ok


def test_validate_file_or_raise_raises_with_the_report_and_a_one_line_summary(
    tmp_path: Path,
) -> None:
    odd = chat(("user", "第一行\n第二行"), ("机器人\n", "嗯"))
    text = jsonl(alpaca(1), odd, alpaca(3, output=""))
    with pytest.raises(InvalidDataset) as caught:
        validate_file_or_raise(write(tmp_path, "data.jsonl", text))
    exc = caught.value
    assert exc.report.error_count == 2
    summary = str(exc)
    assert "\n" not in summary
    assert summary.startswith('line 2: `messages[1].role` is "机器人\\n": a role must be')
    assert summary.endswith("and 1 more error; 1 valid alpaca record")
    # the domain error, so the one error handler maps it to a response with the listed errors
    assert isinstance(exc, errors.InvalidDataset)
    assert [(e.line, e.field) for e in exc.errors] == [(2, "messages[1].role"), (3, "output")]
    assert exc.error_count == 2


def test_validate_file_or_raise_returns_the_report_when_ok(tmp_path: Path) -> None:
    dest = tmp_path / "out.jsonl"
    report = validate_file_or_raise(write(tmp_path, "data.jsonl", jsonl(alpaca(1))), dest=dest)
    assert report.ok and report.summary() == "1 valid alpaca record"
    assert dest.exists()


def test_an_error_message_quoting_user_text_stays_on_one_line(tmp_path: Path) -> None:
    text = jsonl(chat(("user", "你好"), ("用户\n助手", "你好！")))
    error = only_error(validate_file(write(tmp_path, "chat.jsonl", text)))
    assert '"用户\\n助手"' in error.message and "\n" not in error.message


# --- the real shared datasets --------------------------------------------------------------


@needs_shared_data
@pytest.mark.parametrize(
    ("name", "records"),
    [("alpaca_zh_demo.json", 1000), ("alpaca_en_demo.json", 999), ("identity.json", 91)],
)
def test_llamafactory_demo_files_validate_as_alpaca(
    tmp_path: Path, name: str, records: int
) -> None:
    src = SHARED_DATA / "llamafactory-demo" / name
    dest = tmp_path / "records.jsonl"
    report = validate_file(src, dest=dest)
    assert report.ok, report.errors[:3]
    assert (report.format, report.container, report.records) == ("alpaca", "json", records)
    original = json.loads(src.read_text(encoding="utf-8"))
    written = read_jsonl(dest)
    assert len(written) == records
    first = original[0]
    user = first["instruction"] + (f"\n\n{first['input']}" if first["input"] else "")
    assert written[0]["messages"] == [
        {"role": "user", "content": user},
        {"role": "assistant", "content": first["output"]},
    ]


@needs_shared_data
def test_llamafactory_demo_duplicates_are_warned_about() -> None:
    report = validate_file(SHARED_DATA / "llamafactory-demo" / "alpaca_en_demo.json")
    assert report.warnings[0].startswith("14 duplicate records")
    assert report.warnings[1] == (
        "1 record has a very short answer (under 2 characters), e.g. line 177"
    )


# --- leaving out invalid records, the errors file, progress --------------------------------


def test_left_out_records_are_counted_and_the_rest_written(tmp_path: Path) -> None:
    records = [alpaca(i, output="" if i % 4 == 1 else f"答案{i}") for i in range(12)]
    text = jsonl(*records).replace(json.dumps(records[6], ensure_ascii=False), "{oops")
    dest = tmp_path / "out.jsonl"
    report = validate_file(write(tmp_path, "data.jsonl", text), dest=dest, drop_invalid=True)
    assert report.ok and (report.records, report.dropped, report.error_count) == (8, 4, 4)
    assert [e.line for e in report.errors] == [2, 6, 7, 10]
    assert [r["line"] for r in read_jsonl(dest)] == [1, 3, 4, 5, 8, 9, 11, 12]
    assert report.summary() == "8 valid alpaca records (4 invalid records left out)"
    refused = validate_file(write(tmp_path, "data.jsonl", text), dest=tmp_path / "no.jsonl")
    assert not refused.ok and refused.dropped == 0 and not (tmp_path / "no.jsonl").exists()


def test_every_error_goes_to_the_errors_file_as_csv_excel_can_open(tmp_path: Path) -> None:
    records = [alpaca(i, output="") for i in range(300)] + [{"instruction": "问", "output": 1}]
    errors_file = tmp_path / "errors.csv"
    report = validate_file(
        write(tmp_path, "data.jsonl", jsonl(*records)), max_errors=5, errors_file=errors_file
    )
    assert (report.error_count, len(report.errors)) == (301, 5)
    raw = errors_file.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbfline,field,message\r\n")  # Excel reads the BOM as UTF-8
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    assert len(rows) == 302
    assert rows[1] == ["1", "output", "`output` is empty: every record needs an answer"]
    assert rows[-1] == ["301", "output", "`output` must be text, but it is a number (1)"]


def test_the_errors_file_stops_at_its_cap_and_says_how_many_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dataset_parsing, "ERRORS_FILE_CAP", 3)
    errors_file = tmp_path / "errors.csv"
    text = jsonl(*(alpaca(i, output="") for i in range(10)))
    validate_file(write(tmp_path, "data.jsonl", text), errors_file=errors_file)
    rows = list(csv.reader(io.StringIO(errors_file.read_text(encoding="utf-8-sig"))))
    assert [row[0] for row in rows] == ["line", "1", "2", "3", ""]
    assert rows[-1][2] == "… and 7 more errors, not listed: fix these first"


def test_a_valid_file_gets_an_errors_file_with_only_the_header(tmp_path: Path) -> None:
    errors_file = tmp_path / "errors.csv"
    assert validate_file(write(tmp_path, "d.jsonl", jsonl(alpaca(1))), errors_file=errors_file).ok
    assert errors_file.read_bytes() == b"\xef\xbb\xbfline,field,message\r\n"


@pytest.mark.parametrize("name", ["data.jsonl", "data.json", "data.csv"])
def test_progress_is_reported_as_the_file_is_read_and_once_at_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setattr(dataset_parsing, "PROGRESS_INTERVAL_S", 0.0)  # report at every chance
    monkeypatch.setattr(dataset_containers, "READ_CHUNK", 4096)
    records = [alpaca(i, output="很长的答案。" * 50) for i in range(2000)]
    if name == "data.json":
        content = json.dumps(records, ensure_ascii=False)
    elif name == "data.csv":
        content = "instruction,input,output\n" + "".join(
            f"{r['instruction']},{r['input']},{r['output']}\n" for r in records
        )
    else:
        content = jsonl(*records)
    src = write(tmp_path, name, content)
    size = src.stat().st_size
    calls: list[tuple[int, int]] = []
    assert validate_file(src, progress=lambda done, total: calls.append((done, total))).ok
    assert len(calls) > 5 and calls[-1] == (size, size)
    assert all(total == size for _, total in calls)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_progress_is_reported_at_most_twenty_times_a_second(tmp_path: Path) -> None:
    src = write(tmp_path, "d.jsonl", jsonl(*(alpaca(i) for i in range(20_000))))
    calls: list[float] = []
    start = time.monotonic()
    validate_file(src, progress=lambda done, total: calls.append(time.monotonic()))
    took = time.monotonic() - start
    assert 1 <= len(calls) <= took * 20 + 2


# --- large files: several worker processes -------------------------------------------------


def _mixed_file(tmp_path: Path) -> Path:
    lines = []
    for i in range(3000):
        if i % 97 == 5:
            lines.append(json.dumps(alpaca(i, output=""), ensure_ascii=False))
        elif i % 131 == 7:
            lines.append('{"instruction": "x", "output": "y" "z"}')
        elif i % 50 == 0:
            lines.append(json.dumps(alpaca(0), ensure_ascii=False))  # duplicates across ranges
        elif i % 3 == 0:
            lines.append(
                json.dumps(chat(("user", f"问题{i}"), ("assistant", "Answer.")), ensure_ascii=False)
            )
        else:
            lines.append(json.dumps(alpaca(i), ensure_ascii=False))
    return write(tmp_path, "big.jsonl", "\n".join(lines) + "\n")


@pytest.mark.parametrize("drop_invalid", [False, True])
def test_workers_find_exactly_what_one_process_finds(tmp_path: Path, drop_invalid: bool) -> None:
    src = _mixed_file(tmp_path)
    reports = {}
    for workers in (1, 3):
        reports[workers] = validate_file(
            src,
            dest=tmp_path / f"out{workers}.jsonl",
            errors_file=tmp_path / f"errors{workers}.csv",
            workers=workers,
            drop_invalid=drop_invalid,
            max_errors=7,
        )
    one, three = reports[1], reports[3]
    assert one == three
    assert (one.records, one.error_count, len(one.errors)) == (2946, 54, 7)
    assert one.warnings[0].startswith("58 duplicate records") and one.formats["chat"] > 900
    assert (tmp_path / "errors1.csv").read_bytes() == (tmp_path / "errors3.csv").read_bytes()
    if drop_invalid:
        assert (tmp_path / "out1.jsonl").read_bytes() == (tmp_path / "out3.jsonl").read_bytes()
    else:
        assert not (tmp_path / "out1.jsonl").exists() and not (tmp_path / "out3.jsonl").exists()


def test_when_a_worker_cannot_start_one_process_does_it_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _mixed_file(tmp_path)
    expected = validate_file(src, dest=tmp_path / "one.jsonl", workers=1, drop_invalid=True)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python-here"))
    report = validate_file(src, dest=tmp_path / "two.jsonl", workers=2, drop_invalid=True)
    assert report == expected
    assert (tmp_path / "one.jsonl").read_bytes() == (tmp_path / "two.jsonl").read_bytes()


def test_the_benchmark_runs_quickly_and_prints_one_json_line() -> None:
    bench = Path(__file__).resolve().parents[2] / "bench" / "dataset_validation.py"
    done = subprocess.run(
        [sys.executable, str(bench), "--quick"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    keys = {
        "size_mb",
        "records",
        "baseline_mb_s",
        "tunelab_mb_s",
        "ratio",
        "baseline_peak_rss_mb",
        "tunelab_peak_rss_mb",
        "tunelab_worker_peak_rss_mb",
    }
    assert keys <= result.keys() and keys <= result["half"].keys()
    assert result["size_mb"] == 20 and result["records"] > 1000


def test_half_a_surrogate_pair_in_a_json_array_is_located(tmp_path: Path) -> None:
    text = '[{"instruction": "a", "output": "bb"},\n{"instruction": "c", "output": "\\ud83d"}]'
    error = only_error(validate_file(write(tmp_path, "data.json", text)))
    assert (error.line, error.field) == (2, "output")
    assert "broken character (an unpaired \\ud83d at character 1)" in error.message


@pytest.mark.parametrize("chunk", [5, 100, 1 << 20])
def test_a_minified_json_array_on_one_line_keeps_its_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(dataset_containers, "READ_CHUNK", chunk)
    text = json.dumps([alpaca(i) for i in range(300)], ensure_ascii=False, separators=(",", ":"))
    at = text.index('"output"', len(text) // 2)
    broken = text[:at] + '"output" "x"' + text[at + len('"output"') :]
    with pytest.raises(json.JSONDecodeError) as whole:
        json.loads(broken)
    report = validate_file(write(tmp_path, "min.json", broken))
    error = report.errors[-1]
    assert (error.line, error.message) == (1, dataset_containers.syntax_message(whole.value))
    assert f"at column {whole.value.colno}:" in error.message and whole.value.colno > 10_000
    assert report.records == text[:at].count('{"instruction"') - 1  # those before the error
