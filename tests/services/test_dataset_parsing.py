# Chinese text here uses full-width punctuation on purpose: it is what our users write.

"""Uploaded training files: every problem found with its line and field, valid files normalized.

Real files on disk: the broken fixtures in tests/data/broken, files written to tmp_path, and
the shared real datasets.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pytest

from app.core import errors
from app.services import dataset_containers
from app.services.dataset_parsing import (
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
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


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
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "把第2句话翻译成英文。"},
                {"role": "assistant", "content": "Sentence 2: the weather is nice today."},
            ]
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
            ]
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
            ]
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


def test_file_that_is_neither_json_nor_jsonl_gets_one_clear_error(tmp_path: Path) -> None:
    report = validate_file(write(tmp_path, "data.csv", "instruction,input,output\n你好,,Hello\n"))
    error = only_error(report)
    assert error.line == 1 and report.container is None
    assert "does not look like JSON or JSONL" in error.message
    assert "`instruction,input,output`" in error.message


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


def test_json_array_larger_than_the_cap_asks_for_jsonl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dataset_containers, "MAX_JSON_BYTES", 100)
    text = json.dumps([alpaca(i) for i in range(5)], ensure_ascii=False)
    error = only_error(validate_file(write(tmp_path, "big.json", text)))
    assert "upload large datasets as JSONL" in error.message
    # the same records as JSONL are read line by line, whatever the size
    assert validate_file(write(tmp_path, "big.jsonl", jsonl(*(alpaca(i) for i in range(5))))).ok


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
        "line 1: this is not UTF-8 text: it looks like a binary file (an image, an archive or a "
        "spreadsheet?); upload a .json or .jsonl file"
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
    monkeypatch.setattr(dataset_containers, "MAX_LINE_BYTES", 300)
    text = jsonl(alpaca(1), alpaca(2, output="很长" * 200), alpaca(3))
    report = validate_file(write(tmp_path, "data.jsonl", text))
    error = only_error(report)
    assert error.line == 2 and "this line is longer than 300 bytes" in error.message
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


def test_a_record_of_another_format_is_reported_as_such() -> None:
    report = validate_file(BROKEN / "mixed_formats.jsonl")
    assert report.format == "alpaca"
    error = only_error(report)
    assert (error.line, error.field) == (3, None)
    assert str(error).startswith(
        "line 3: this record looks like chat (it has `messages`) but the file is alpaca"
    )
    assert report.records == 3


def test_the_format_most_records_have_wins_even_when_the_first_record_is_odd(
    tmp_path: Path,
) -> None:
    first = chat(("user", "你好"), ("assistant", "你好！"))
    text = jsonl(first, *(alpaca(i) for i in range(5)))
    report = validate_file(write(tmp_path, "data.jsonl", text))
    assert report.format == "alpaca"
    assert [e.line for e in report.errors] == [1]


def test_declared_format_overrides_detection(tmp_path: Path) -> None:
    text = jsonl(*(chat(("user", "你好"), ("assistant", "你好！")) for _ in range(2)), alpaca(3))
    report = validate_file(write(tmp_path, "data.jsonl", text), format="alpaca")
    assert report.format == "alpaca" and report.records == 1
    assert "but the file was declared as alpaca" in report.errors[0].message
    assert report.error_count == 2


def test_unknown_declared_format_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset format 'sharegpt'"):
        validate_file(write(tmp_path, "data.jsonl", jsonl(alpaca(1))), format="sharegpt")


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
    assert summary.startswith("line 2: this record looks like chat")
    assert summary.endswith("and 1 more error; 1 valid alpaca record")
    # the domain error, so the one error handler maps it to a response with the listed errors
    assert isinstance(exc, errors.InvalidDataset)
    assert [(e.line, e.field) for e in exc.errors] == [(2, None), (3, "output")]
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


@needs_shared_data
@pytest.mark.parametrize(
    ("path", "fields"),
    [
        ("samsum-subset/samsum_train_first200.jsonl", "`dialogue`, `index`, `summary`"),
        ("gsm8k/train.jsonl", "`answer`, `question`"),
        ("gsm8k/test.jsonl", "`answer`, `question`"),
        ("belle-eval-zh/eval_set.jsonl", "`class`, `question`, `std_answer`"),
    ],
)
def test_shared_files_in_formats_we_do_not_read_get_one_error_naming_their_fields(
    path: str, fields: str
) -> None:
    report = validate_file(SHARED_DATA / path)
    assert (report.container, report.format, report.records) == ("jsonl", None, 0)
    assert f"this one has {fields}" in only_error(report).message


@needs_shared_data
@pytest.mark.parametrize(
    ("name", "records"), [("seed_tasks.jsonl", 175), ("user_oriented_instructions.jsonl", 252)]
)
def test_self_instruct_files_look_like_alpaca_but_keep_answers_under_instances(
    name: str, records: int
) -> None:
    report = validate_file(SHARED_DATA / "self-instruct" / name)
    assert report.format == "alpaca" and report.records == 0
    assert report.error_count == records
    assert {e.field for e in report.errors} == {"output"}
    assert "`instances`" in report.errors[0].message
