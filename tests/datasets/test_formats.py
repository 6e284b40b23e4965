# Chinese text here uses full-width punctuation on purpose: it is what our users write.

"""Record formats: each recognised by its fields, converted to chat messages, explained when wrong.

ShareGPT, prompt/completion (and the names public datasets give those two fields),
self-instruct, explicit field mappings, files mixing formats, the language warning, and every
real dataset in ../shared/data.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.datasets.formats import (
    FORMATS,
    ChatFormat,
    NoAnswer,
    PromptCompletionFormat,
    RecordProblems,
    ShareGPTFormat,
    detect,
)
from app.datasets.parsing import ValidationReport, validate_file

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"shared datasets not found at {SHARED_DATA}"
)


def jsonl(*records: Any) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def write(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    # split on \n only: answers may hold U+2028 or other characters splitlines() breaks at
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]


def only_error(report: ValidationReport) -> tuple[int, str | None, str]:
    assert report.error_count == 1, report.errors
    error = report.errors[0]
    return error.line, error.field, error.message


def sharegpt(*turns: tuple[str, Any], **fields: Any) -> dict[str, Any]:
    return {"conversations": [{"from": who, "value": text} for who, text in turns], **fields}


# --- ShareGPT ------------------------------------------------------------------------------


def test_sharegpt_speakers_become_chat_roles(tmp_path: Path) -> None:
    records = [
        sharegpt(("human", "你好"), ("gpt", "你好！有什么可以帮你？")),
        sharegpt(("system", "简洁回答。"), ("user", "一加一？"), ("assistant", "二")),
        sharegpt(("human", "翻译：猫"), ("gpt", "cat"), system="你是翻译。"),
    ]
    dest = tmp_path / "out.jsonl"
    report = validate_file(write(tmp_path, "sg.jsonl", jsonl(*records)), dest=dest)
    assert report.ok and (report.format, report.records) == ("sharegpt", 3)
    assert [r["messages"] for r in read_jsonl(dest)] == [
        [
            {"role": "user", "content": "你好"},
            {"role": "assistant", "content": "你好！有什么可以帮你？"},
        ],
        [
            {"role": "system", "content": "简洁回答。"},
            {"role": "user", "content": "一加一？"},
            {"role": "assistant", "content": "二"},
        ],
        [
            {"role": "system", "content": "你是翻译。"},
            {"role": "user", "content": "翻译：猫"},
            {"role": "assistant", "content": "cat"},
        ],
    ]


def test_sharegpt_unknown_speaker_is_located_and_the_allowed_ones_named(tmp_path: Path) -> None:
    text = jsonl(
        sharegpt(("human", "你好"), ("gpt", "你好！")),
        sharegpt(("human", "你好"), ("function_call", "{}"), ("gpt", "好")),
    )
    line, field, message = only_error(validate_file(write(tmp_path, "sg.jsonl", text)))
    assert (line, field) == (2, "conversations[1].from")
    assert message == (
        '`conversations[1].from` is "function_call": a speaker must be human, gpt or system '
        "(user and assistant also work)"
    )


@pytest.mark.parametrize(
    ("record", "field", "expected"),
    [
        ({"conversations": "你好"}, "conversations", "`conversations` must be a list of turns"),
        ({"conversations": []}, "conversations", "`conversations` is empty"),
        (sharegpt(("human", "你好")), "conversations", "has no assistant turn"),
        (sharegpt(("human", "你好"), ("gpt", "")), "conversations[1].value", "is empty"),
        (
            {"conversations": [{"from": "human"}, {"from": "gpt", "value": "好"}]},
            "conversations[0].value",
            "`conversations[0].value` is missing",
        ),
        (
            {"conversations": [{"value": "你好"}, {"from": "gpt", "value": "好"}]},
            "conversations[0].from",
            "`conversations[0].from` is missing: use human, gpt or system",
        ),
        (
            {"conversations": ["你好", {"from": "gpt", "value": "好"}]},
            "conversations[0]",
            "must be an object with `from` and `value`",
        ),
        (
            sharegpt(("human", "你好"), ("gpt", "好"), ("human", "再见")),
            "conversations",
            "must end with an assistant turn, but the last one (conversations[2]) is user",
        ),
    ],
)
def test_sharegpt_structure_problems_are_located(
    tmp_path: Path, record: dict[str, Any], field: str, expected: str
) -> None:
    text = jsonl(sharegpt(("human", "你好"), ("gpt", "你好！")), record)
    line, got_field, message = only_error(validate_file(write(tmp_path, "sg.jsonl", text)))
    assert (line, got_field) == (2, field)
    assert expected in message


def test_sharegpt_turns_written_with_role_and_content_are_read_too(tmp_path: Path) -> None:
    record = {
        "conversations": [
            {"role": "user", "content": "你好"},
            {"role": "assistant", "content": "你好！"},
        ]
    }
    dest = tmp_path / "out.jsonl"
    assert validate_file(write(tmp_path, "sg.jsonl", jsonl(record)), dest=dest).ok
    assert read_jsonl(dest)[0]["messages"][1] == {"role": "assistant", "content": "你好！"}


# --- prompt / completion -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "mapping"),
    [
        (("prompt", "completion"), {"prompt": "prompt", "completion": "completion"}),
        (("question", "answer"), {"prompt": "question", "completion": "answer"}),
        (("question", "std_answer"), {"prompt": "question", "completion": "std_answer"}),
        (("dialogue", "summary"), {"prompt": "dialogue", "completion": "summary"}),
        (("query", "response"), {"prompt": "query", "completion": "response"}),
    ],
)
def test_prompt_completion_is_detected_by_well_known_field_names(
    tmp_path: Path, fields: tuple[str, str], mapping: dict[str, str]
) -> None:
    prompt, answer = fields
    records = [
        {"index": i, prompt: f"问题{i}", answer: f"答案{i}", "class": "qa"} for i in range(4)
    ]
    dest = tmp_path / "out.jsonl"
    report = validate_file(write(tmp_path, "qa.jsonl", jsonl(*records)), dest=dest)
    assert report.ok and (report.format, report.mapping) == ("prompt_completion", mapping)
    assert read_jsonl(dest)[3] == {
        "messages": [
            {"role": "user", "content": "问题3"},
            {"role": "assistant", "content": "答案3"},
        ],
        "line": 4,
    }


def test_prompt_completion_record_without_its_answer_field_is_an_error(tmp_path: Path) -> None:
    text = jsonl({"question": "一加一？", "answer": "二"}, {"question": "二加二？", "reply": "四"})
    line, field, message = only_error(validate_file(write(tmp_path, "qa.jsonl", text)))
    assert (line, field) == (2, "answer")
    assert message.startswith("`answer` is missing (the record has `question`, `reply`)")


def test_records_with_an_empty_answer_are_left_out_with_a_warning(tmp_path: Path) -> None:
    # evaluation sets (BELLE's) keep questions without a reference answer
    records = [
        {"question": f"问题{i}", "std_answer": "" if i % 3 else f"答案{i}"} for i in range(9)
    ]
    dest = tmp_path / "out.jsonl"
    report = validate_file(write(tmp_path, "eval.jsonl", jsonl(*records)), dest=dest)
    assert report.ok and report.errors == [] and report.records == 3
    assert report.warnings == [
        "6 records have an empty `std_answer` (no answer to learn from) and were left out, "
        "e.g. line 2"
    ]
    assert [r["line"] for r in read_jsonl(dest)] == [1, 4, 7]


def test_a_file_whose_answers_are_all_empty_has_nothing_to_train_on(tmp_path: Path) -> None:
    text = jsonl(*({"question": f"问题{i}", "answer": ""} for i in range(3)))
    report = validate_file(write(tmp_path, "qa.jsonl", text))
    assert not report.ok and report.records == 0
    assert report.errors[0].message == (
        "every record has an empty `answer`: there is no answer to learn from"
    )
    assert report.warnings[0].startswith("3 records have an empty `answer`")


def test_declared_prompt_completion_finds_its_field_names(tmp_path: Path) -> None:
    text = jsonl({"question": "一加一？", "answer": "二", "instruction": "算"})
    report = validate_file(write(tmp_path, "qa.jsonl", text), format="prompt_completion")
    assert report.ok and report.mapping == {"prompt": "question", "completion": "answer"}


# --- self-instruct -------------------------------------------------------------------------


def test_self_instruct_gives_one_conversation_per_instance(tmp_path: Path) -> None:
    record = {
        "id": "seed_task_0",
        "instruction": "把句子翻译成英文。",
        "instances": [{"input": "你好", "output": "Hello"}, {"input": "", "output": "Nothing"}],
        "is_classification": False,
    }
    dest = tmp_path / "out.jsonl"
    report = validate_file(write(tmp_path, "si.jsonl", jsonl(record, record)), dest=dest)
    assert report.ok and (report.format, report.records) == ("self_instruct", 4)
    written = read_jsonl(dest)
    assert [r["line"] for r in written] == [1, 1, 2, 2]
    assert written[0]["messages"] == [
        {"role": "user", "content": "把句子翻译成英文。\n\n你好"},
        {"role": "assistant", "content": "Hello"},
    ]
    assert written[1]["messages"][0] == {"role": "user", "content": "把句子翻译成英文。"}
    assert report.warnings[0].startswith("2 duplicate records")


@pytest.mark.parametrize(
    ("instances", "field", "expected"),
    [
        ([{"input": "a", "output": "b"}, {"input": "c"}], "instances[1].output", "is missing"),
        ([{"input": "a", "output": 3}], "instances[0].output", "must be text"),
        ([], "instances", "`instances` is empty"),
        ("例子", "instances", "`instances` must be a list of examples"),
        (["例子"], "instances[0]", "must be an object with `input` and `output`"),
    ],
)
def test_self_instruct_problems_are_located(
    tmp_path: Path, instances: Any, field: str, expected: str
) -> None:
    good = {"instruction": "翻译", "instances": [{"input": "猫", "output": "cat"}]}
    text = jsonl(good, {"instruction": "翻译", "instances": instances})
    line, got_field, message = only_error(validate_file(write(tmp_path, "si.jsonl", text)))
    assert (line, got_field) == (2, field)
    assert expected in message


# --- explicit mapping ------------------------------------------------------------------------


def test_a_mapping_reads_any_fields_and_appends_input_after_a_blank_line(tmp_path: Path) -> None:
    records = [
        {"问题": "翻译成英文", "上下文": "你好", "答案": "Hello", "人设": "你是翻译。"},
        {"问题": "再见怎么说？", "上下文": "", "答案": "Goodbye", "人设": None},
    ]
    mapping = {"prompt": "问题", "input": "上下文", "completion": "答案", "system": "人设"}
    dest = tmp_path / "out.jsonl"
    report = validate_file(
        write(tmp_path, "data.jsonl", jsonl(*records)), dest=dest, mapping=mapping
    )
    assert report.ok and (report.format, report.mapping) == ("columns", mapping)
    assert [r["messages"] for r in read_jsonl(dest)] == [
        [
            {"role": "system", "content": "你是翻译。"},
            {"role": "user", "content": "翻译成英文\n\n你好"},
            {"role": "assistant", "content": "Hello"},
        ],
        [{"role": "user", "content": "再见怎么说？"}, {"role": "assistant", "content": "Goodbye"}],
    ]


def test_a_mapping_naming_a_field_the_file_lacks_is_one_error_listing_the_fields(
    tmp_path: Path,
) -> None:
    text = jsonl(*({"问题": f"问题{i}", "答案": f"答案{i}"} for i in range(50)))
    dest = tmp_path / "out.jsonl"
    mapping = {"prompt": "问题", "completion": "回答"}
    report = validate_file(write(tmp_path, "data.jsonl", text), dest=dest, mapping=mapping)
    assert only_error(report) == (
        1,
        "回答",
        "the mapping names the field `回答`, which the file does not have; its fields are "
        "`问题`, `答案`: choose among those",
    )
    assert not report.ok and not dest.exists()


def test_a_record_with_an_empty_mapped_field_is_an_error_naming_it(tmp_path: Path) -> None:
    text = jsonl({"q": "一", "a": "二"}, {"q": " ", "a": "四"}, {"q": "五"})
    report = validate_file(
        write(tmp_path, "d.jsonl", text), mapping={"prompt": "q", "completion": "a"}
    )
    assert [(e.line, e.field) for e in report.errors] == [(2, "q"), (3, "a")]
    assert (
        report.errors[0].message == "`q` is empty: every record needs a prompt (`q` is the prompt)"
    )


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"mapping": {"prompt": "q"}}, "needs `completion`"),
        (
            {"mapping": {"prompt": "q", "answer": "a"}},
            "unknown role in the column mapping: `answer`",
        ),
        ({"mapping": {"prompt": "q", "completion": "a"}, "format": "alpaca"}, "cannot be used"),
        ({"format": "columns"}, "needs a mapping"),
    ],
)
def test_an_unusable_mapping_is_a_programming_error(
    tmp_path: Path, options: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ValueError, match=expected):
        validate_file(write(tmp_path, "d.jsonl", jsonl({"q": "一", "a": "二"})), **options)


# --- several formats in one file, detection --------------------------------------------------


def test_each_record_of_a_mixed_file_is_read_in_its_own_format(tmp_path: Path) -> None:
    records = [
        {"instruction": "翻译：猫", "output": "cat"},
        {
            "messages": [
                {"role": "user", "content": "你好"},
                {"role": "assistant", "content": "你好！"},
            ]
        },
        sharegpt(("human", "一加一？"), ("gpt", "等于二")),
        {"question": "二加二？", "answer": "等于四"},
        {"instruction": "翻译：狗", "output": "dog"},
    ]
    dest = tmp_path / "out.jsonl"
    report = validate_file(write(tmp_path, "mixed.jsonl", jsonl(*records)), dest=dest)
    assert report.ok and report.format == "alpaca"
    assert report.formats == {"alpaca": 2, "chat": 1, "sharegpt": 1, "prompt_completion": 1}
    assert report.warnings[0] == (
        "the file mixes record formats (2 alpaca, 1 chat, 1 sharegpt, 1 prompt_completion; e.g. "
        "line 2 is chat, line 3 is sharegpt, line 4 is prompt_completion); each record was "
        "converted according to its own format"
    )
    assert read_jsonl(dest)[3]["messages"][1] == {"role": "assistant", "content": "等于四"}


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"instruction": "a", "instances": []}, "self_instruct"),
        ({"instruction": "a", "input": "", "output": "b"}, "alpaca"),
        ({"conversations": []}, "sharegpt"),
        ({"messages": []}, "chat"),
        ({"question": "a", "answer": "b", "id": 1}, "prompt_completion"),
        ({"题目": "a", "解答": "b"}, None),
    ],
)
def test_a_format_is_recognised_by_the_fields_it_has_most_of(
    record: dict[str, Any], expected: str | None
) -> None:
    assert detect([record])[0] == expected


def test_records_of_a_format_chosen_by_hand_still_get_other_formats_refused(tmp_path: Path) -> None:
    text = jsonl(sharegpt(("human", "你好"), ("gpt", "嗨")), {"messages": []})
    report = validate_file(write(tmp_path, "d.jsonl", text), format="sharegpt")
    assert report.records == 1
    assert "looks like chat (it has `messages`) but the file was declared as sharegpt" in (
        report.errors[0].message
    )


# --- the language warning --------------------------------------------------------------------


def test_a_few_english_answers_in_a_chinese_set_are_warned_about(tmp_path: Path) -> None:
    records = [{"instruction": f"问题{i}", "output": f"这是第{i}个回答。"} for i in range(95)]
    for i in (10, 40, 70):
        records[i]["output"] = "This answer is in English."
    records[20]["output"] = "42"  # no letters: no language
    report = validate_file(write(tmp_path, "zh.jsonl", jsonl(*records)))
    assert report.ok
    assert report.warnings == [
        "3 answers are in a Latin-script language such as English while 91 are in Chinese, "
        "Japanese or Korean (e.g. line 11): check that they belong in this dataset"
    ]


def test_a_chinese_answer_with_english_words_counts_as_chinese(tmp_path: Path) -> None:
    records = [
        {"instruction": f"问题{i}", "output": f"用 Python 的 print() 函数输出第{i}行。"}
        for i in range(20)
    ] + [{"instruction": "Say hi", "output": "こんにちは"}]
    report = validate_file(write(tmp_path, "zh.jsonl", jsonl(*records)))
    assert report.warnings == []


def test_a_bilingual_set_gets_no_language_warning(tmp_path: Path) -> None:
    records = [
        {"instruction": f"翻译{i}", "output": "Hello" if i % 2 else "你好"} for i in range(40)
    ]
    assert validate_file(write(tmp_path, "both.jsonl", jsonl(*records))).warnings == []


# --- the fast conversion agrees with the careful one -------------------------------------------


def _random_record(rng: random.Random) -> dict[str, Any]:
    texts: list[Any] = ["你好", "Hello", "", " ", "\u3000", "x", None, 3, ["a"], {"a": 1}, "答 "]

    def text() -> Any:
        return rng.choice(texts)

    def turn(keys: tuple[str, str], roles: list[Any]) -> Any:
        if rng.random() < 0.05:
            return rng.choice(["turn", 1, None])
        fields = {keys[0]: rng.choice(roles), keys[1]: text()}
        if rng.random() < 0.1:
            del fields[rng.choice(keys)]
        if rng.random() < 0.1:
            fields["name"] = "extra"
        return dict(reversed(fields.items())) if rng.random() < 0.2 else fields

    kind = rng.randrange(4)
    if kind == 0:
        record = {
            k: text() for k in ("instruction", "input", "output", "system") if rng.random() < 0.9
        }
        if rng.random() < 0.2:
            record["history"] = rng.choice([None, [], [["a", "b"]], "x"])
        return record
    if kind == 1:
        roles = ["user", "assistant", "system", "bot", 3, None, ["user"], {"a": 1}]
        turns = [turn(("role", "content"), roles) for _ in range(rng.randrange(0, 5))]
        return {"messages": turns if rng.random() < 0.95 else "x"}
    if kind == 2:
        speakers = ["human", "gpt", "system", "user", "assistant", "tool", None, ["gpt"]]
        turns = [turn(("from", "value"), speakers) for _ in range(rng.randrange(0, 5))]
        record = {"conversations": turns}
        if rng.random() < 0.2:
            record["system"] = text()
        return record
    return {k: text() for k in ("question", "answer", "context") if rng.random() < 0.9}


def test_quick_conversion_agrees_with_normalize_on_random_records() -> None:
    rng = random.Random(11)
    formats = {
        "alpaca": FORMATS["alpaca"],
        "chat": FORMATS["chat"],
        "sharegpt": FORMATS["sharegpt"],
        "prompt_completion": PromptCompletionFormat({"prompt": "question", "completion": "answer"}),
        "columns": FORMATS["columns"].with_mapping(  # type: ignore[attr-defined]
            {"prompt": "question", "input": "context", "completion": "answer"}
        ),
    }
    quick_ones = 0
    for _ in range(4000):
        record = orjson.loads(orjson.dumps(_random_record(rng)))
        for fmt in formats.values():
            fast = fmt.quick(record)
            try:
                careful = fmt.normalize(record)
            except (RecordProblems, NoAnswer):
                careful = None
            if fast is not None:
                quick_ones += 1
                assert fast == careful, (fmt.name, record)
                assert orjson.dumps(fast) == orjson.dumps(careful)  # same key order
    assert quick_ones > 150  # the generator does produce valid records


def test_a_record_refused_by_the_fast_parser_gets_the_same_conversion(tmp_path: Path) -> None:
    # orjson refuses NaN and lone surrogates; the json module reads them and explains
    text = (
        '{"instruction": "a", "output": NaN}\n'
        '{"instruction": "b", "output": "\\ud83d"}\n'
        '{"instruction": "c", "output": "\\ud83d\\ude00", "n": 12345678901234567890123}\n'
    )
    report = validate_file(write(tmp_path, "d.jsonl", text))
    assert [(e.line, e.field) for e in report.errors] == [(1, "output"), (2, "output")]
    assert "a number (NaN)" in report.errors[0].message
    assert "broken character" in report.errors[1].message
    assert report.records == 1


def test_chat_and_sharegpt_quick_paths_reject_what_normalize_rejects() -> None:
    bad_order = {
        "messages": [{"role": "assistant", "content": "嗨"}, {"role": "user", "content": "你好"}]
    }
    assert ChatFormat().quick(bad_order) is None
    with pytest.raises(RecordProblems):
        ChatFormat().normalize(bad_order)
    only_system = sharegpt(("system", "规则"), ("gpt", "好"))
    assert ShareGPTFormat().quick(only_system) is None
    with pytest.raises(RecordProblems, match="has no user turn"):
        ShareGPTFormat().normalize(only_system)


# --- the real shared datasets --------------------------------------------------------------

SHARED_FORMATS = {
    "belle-eval-zh/eval_set.jsonl": ("prompt_completion", 631),
    "gsm8k/test.jsonl": ("prompt_completion", 1319),
    "gsm8k/train.jsonl": ("prompt_completion", 7473),
    "llamafactory-demo/alpaca_en_demo.json": ("alpaca", 999),
    "llamafactory-demo/alpaca_zh_demo.json": ("alpaca", 1000),
    "llamafactory-demo/identity.json": ("alpaca", 91),
    "samsum-subset/samsum_train_first200.jsonl": ("prompt_completion", 200),
    "self-instruct/seed_tasks.jsonl": ("self_instruct", 175),
    "self-instruct/user_oriented_instructions.jsonl": ("self_instruct", 252),
}


@needs_shared_data
def test_the_list_of_shared_datasets_below_is_complete() -> None:
    found = {
        str(p.relative_to(SHARED_DATA))
        for p in SHARED_DATA.glob("*/*")
        if p.suffix in (".json", ".jsonl")
    }
    assert found == set(SHARED_FORMATS)


@needs_shared_data
@pytest.mark.parametrize(("name", "expected"), sorted(SHARED_FORMATS.items()))
def test_every_shared_dataset_validates_with_no_errors(
    tmp_path: Path, name: str, expected: tuple[str, int]
) -> None:
    dest = tmp_path / "records.jsonl"
    report = validate_file(SHARED_DATA / name, dest=dest)
    assert report.error_count == 0, report.errors[:3]
    assert report.ok and (report.format, report.records) == expected
    written = read_jsonl(dest)
    assert len(written) == report.records
    assert all(r["messages"][-1]["role"] == "assistant" for r in written)


@needs_shared_data
def test_shared_question_answer_sets_report_the_fields_they_use() -> None:
    mappings = {
        "gsm8k/train.jsonl": {"prompt": "question", "completion": "answer"},
        "belle-eval-zh/eval_set.jsonl": {"prompt": "question", "completion": "std_answer"},
        "samsum-subset/samsum_train_first200.jsonl": {
            "prompt": "dialogue",
            "completion": "summary",
        },
    }
    for name, mapping in mappings.items():
        assert validate_file(SHARED_DATA / name).mapping == mapping


@needs_shared_data
def test_self_instruct_seed_tasks_become_one_conversation_per_instance(tmp_path: Path) -> None:
    src = SHARED_DATA / "self-instruct" / "seed_tasks.jsonl"
    instances = sum(len(json.loads(line)["instances"]) for line in src.open(encoding="utf-8"))
    dest = tmp_path / "records.jsonl"
    report = validate_file(src, dest=dest)
    assert report.records == instances
    first = json.loads(src.open(encoding="utf-8").readline())
    assert read_jsonl(dest)[0]["messages"] == [
        {"role": "user", "content": first["instruction"]},
        {"role": "assistant", "content": first["instances"][0]["output"]},
    ]
