"""Dataset statistics: lengths in characters or tokens, language mix, duplicates, longest
samples, the max_seq_length cut, and the charts that draw them."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from app.core.config import PROJECT_ROOT
from app.core.errors import InvalidDataset
from app.datasets.stats import (
    compute_stats,
    compute_stats_of,
    describe,
    dominant_script,
    histogram,
    nice_width,
    token_counter,
)
from app.datasets.tokenization import TextTokenizer, load_tokenizer
from app.web.charts import bar_chart, histogram_chart, language_chart, stats_charts
from worker.spec import formatting


def chat(question: str, answer: str, system: str | None = None) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}] if system else []
    return [
        *messages,
        {"role": "user", "content": question},
        {"role": "assistant", "content": answer},
    ]


def write_records(
    path: Path, conversations: Sequence[list[dict[str, str]]], *, lines: bool = True
) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for number, messages in enumerate(conversations):
            record: dict[str, Any] = {"messages": messages}
            if lines:
                record["line"] = number * 2 + 2  # as if the source had a header and blank lines
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


@pytest.fixture
def qwen3(tmp_path: Path) -> TextTokenizer:
    return load_tokenizer("qwen3", cache_dir=tmp_path)


# --- Characters ----------------------------------------------------------------------------


def test_lengths_are_counted_in_characters_not_bytes(tmp_path: Path) -> None:
    path = write_records(
        tmp_path / "r.jsonl",
        [chat("你好", "世界你好"), chat("abc", "defgh", system="sys"), chat("x" * 10, "y")],
    )

    stats = compute_stats(path)

    assert stats["records"] == 3
    assert stats["unit"] == "characters"
    assert stats["sampled"] is None
    assert stats["mean_turns"] == 2.0  # the system prompt is not a turn, but is prompt text
    assert stats["prompt"] | {"histogram": None} == {
        "min": 2,
        "mean": 6.0,
        "p50": 6,
        "p90": 10,
        "p99": 10,
        "max": 10,
        "histogram": None,
    }
    assert (stats["answer"]["min"], stats["answer"]["max"]) == (1, 5)
    assert [stats["total"][k] for k in ("min", "p50", "max")] == [6, 11, 11]
    json.dumps(stats)  # stored as JSON and sent by the API as it is


def test_percentiles_use_the_nearest_rank(tmp_path: Path) -> None:
    path = write_records(tmp_path / "r.jsonl", [chat("q" * n, "") for n in range(1, 101)])
    stats = compute_stats(path)
    assert [stats["prompt"][k] for k in ("p50", "p90", "p99", "max")] == [50, 90, 99, 100]
    assert stats["prompt"]["mean"] == 50.5


def test_the_longest_samples_name_their_source_line(tmp_path: Path) -> None:
    conversations = [chat(f"question {i}  with\n spaces " + "长" * i, "a") for i in range(15)]
    path = write_records(tmp_path / "r.jsonl", conversations)

    longest = compute_stats(path)["longest"]

    assert [entry["index"] for entry in longest] == list(range(14, 4, -1))
    assert longest[0]["line"] == 30
    assert longest[0]["length"] == len(conversations[14][0]["content"]) + 1
    assert longest[0]["preview"].startswith("question 14 with spaces 长")


def test_old_records_files_without_lines_use_record_numbers(tmp_path: Path) -> None:
    path = write_records(
        tmp_path / "r.jsonl", [chat("a", "b"), chat("long " * 40, "b")], lines=False
    )
    longest = compute_stats(path)["longest"]
    assert [(e["index"], e["line"]) for e in longest] == [(1, 2), (0, 1)]
    assert len(longest[0]["preview"]) == 80
    assert longest[0]["preview"].endswith("…")


def test_duplicates_count_records_with_the_same_messages(tmp_path: Path) -> None:
    same = chat("你好", "世界")
    path = write_records(
        tmp_path / "r.jsonl",
        [same, chat("你好", "世界!"), same, same, chat("你好", "世界", system="s")],
    )
    assert compute_stats(path)["duplicates"] == 2


def test_the_language_mix_counts_records_by_dominant_script(tmp_path: Path) -> None:
    path = write_records(
        tmp_path / "r.jsonl",
        [
            chat("请解释Python中的decorator", "装饰器是一个函数。"),
            chat("今日は良い天気ですね", "散歩に行きましょう"),
            chat("안녕하세요", "반갑습니다"),
            chat("What is a decorator?", "A function that wraps one."),
            chat("Привет", "Здравствуйте, мир"),
            chat("12 + 30", "= 42 !"),
            chat("Translate into English: 你好", "Hello", system="你是一个翻译助手。"),
        ],
    )
    languages = compute_stats(path)["languages"]
    assert languages == {"zh": 1, "ja": 1, "ko": 1, "latin": 2, "other": 1, "none": 1}


@pytest.mark.parametrize(
    ("text", "script"),
    [
        ("东京大学に行きました", "ja"),  # kanji with kana is Japanese
        ("我最喜欢的动画是《ナルト》，讲的是忍者的故事", "zh"),  # a Japanese title in Chinese
        ("中華人民共和國", "zh"),
        ("東京都知事選挙の結果", "ja"),
        ("Ça coûte 10 €", "latin"),
        ("", "none"),
        ("مرحبا بالعالم", "other"),
    ],
)
def test_dominant_script(text: str, script: str) -> None:
    assert dominant_script(text) == script


def test_an_empty_file_has_empty_statistics(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text("")
    stats = compute_stats(path)
    assert stats["records"] == 0
    assert stats["total"]["max"] == 0
    assert stats["total"]["histogram"] == {"edges": [], "counts": []}
    assert stats["longest"] == []


def test_a_damaged_records_file_names_the_line(tmp_path: Path) -> None:
    path = write_records(tmp_path / "r.jsonl", [chat("a", "b")])
    with path.open("a") as fh:
        fh.write('{"messages": [\n')
    with pytest.raises(InvalidDataset, match="line 2"):
        compute_stats(path)


def test_a_hundred_thousand_records_take_seconds(tmp_path: Path) -> None:
    line = json.dumps(
        {"messages": chat("请解释一下这段代码的作用。" * 8, "This code sorts a list. " * 10)}
    )
    path = tmp_path / "big.jsonl"
    path.write_text((line + "\n") * 100_000)

    started = time.perf_counter()
    stats = compute_stats(path)
    elapsed = time.perf_counter() - started

    assert stats["records"] == 100_000
    assert stats["duplicates"] == 99_999
    assert elapsed < 15, f"{elapsed:.1f} s"


def test_a_missing_records_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(InvalidDataset, match="does not exist"):
        compute_stats(tmp_path / "records.jsonl")


def test_a_versions_splits_are_measured_as_one_dataset(tmp_path: Path) -> None:
    train = write_records(tmp_path / "train.jsonl", [chat("a", "b"), chat("你好", "世界")])
    test = write_records(tmp_path / "test.jsonl", [chat("long question " * 5, "b"), chat("a", "b")])

    stats = compute_stats_of([train, tmp_path / "validation.jsonl", test])

    assert stats["records"] == 4
    assert stats["duplicates"] == 1  # the same record in train and test
    assert stats["longest"][0] | {"preview": None} == {
        "split": "test",
        "index": 0,
        "line": 2,
        "length": 71,
        "preview": None,
    }
    assert stats["languages"]["zh"] == 1


def test_describe_reports_the_numbers_as_text(tmp_path: Path, qwen3: TextTokenizer) -> None:
    path = write_records(tmp_path / "r.jsonl", [chat("你好" * 100, "世界"), chat("a", "b")])
    text = describe(compute_stats(path, tokenizer=qwen3, max_seq_length=64))
    assert text.startswith("2 records, 2.0 turns on average, 0 duplicates")
    assert "Lengths (tokens of qwen3)" in text
    assert "Longer than 64 tokens: 1 (50.0%)" in text
    assert "Languages: zh 1, latin 1" in text


# --- Tokens --------------------------------------------------------------------------------


def test_token_lengths_are_what_training_encodes(tmp_path: Path, qwen3: TextTokenizer) -> None:
    conversations = [chat("你好", "世界"), chat("Write a poem. " * 3, "Roses are red. " * 40)]
    path = write_records(tmp_path / "r.jsonl", conversations)

    stats = compute_stats(path, tokenizer=qwen3, max_seq_length=100)

    samples = [formatting.encode(qwen3, c, 10_000) for c in conversations]
    totals = sorted(len(s.input_ids) for s in samples)
    answers = sorted(sum(1 for x in s.labels if x != formatting.IGNORE_INDEX) for s in samples)
    assert stats["unit"] == "tokens"
    assert stats["tokenizer"] == "qwen3"
    assert [stats["total"]["min"], stats["total"]["max"]] == totals
    assert [stats["answer"]["min"], stats["answer"]["max"]] == answers
    assert stats["max_seq_length"] == {
        "limit": 100,
        "longer": 1,
        "share": 0.5,
        "longest": totals[1],
        "dropped": 0,
    }
    assert stats["tokens_per_second"] > 0
    assert stats["template_fallback"] is False


def test_samples_whose_answer_is_cut_off_count_as_dropped(
    tmp_path: Path, qwen3: TextTokenizer
) -> None:
    path = write_records(tmp_path / "r.jsonl", [chat("很长的问题" * 50, "答"), chat("短", "答")])
    cut = compute_stats(path, tokenizer=qwen3, max_seq_length=40)["max_seq_length"]
    assert (cut["longer"], cut["dropped"]) == (1, 1)


def test_more_records_than_the_limit_are_sampled_evenly_and_repeatably(
    tmp_path: Path, qwen3: TextTokenizer
) -> None:
    path = write_records(tmp_path / "r.jsonl", [chat("q" * (i + 1), "答") for i in range(35)])

    stats = compute_stats(path, tokenizer=qwen3, sample_limit=10)

    assert stats["records"] == 35
    assert stats["sampled"] == 10
    assert sum(stats["total"]["histogram"]["counts"]) == 10
    assert sum(stats["languages"].values()) == 35  # counted on every record
    assert [e["index"] for e in stats["longest"]] == [31, 28, 24, 21, 17, 14, 10, 7, 3, 0]
    again = compute_stats(path, tokenizer=qwen3, sample_limit=10)
    assert {k: v for k, v in again.items() if k not in {"seconds", "tokens_per_second"}} == {
        k: v for k, v in stats.items() if k not in {"seconds", "tokens_per_second"}
    }


def test_records_the_template_refuses_are_counted_not_fatal(
    tmp_path: Path, qwen3: TextTokenizer
) -> None:
    strict = TextTokenizer(
        qwen3.backend,
        name="strict",
        chat_template=(
            "{% for m in messages %}{% if m.role == 'system' %}"
            "{{ raise_exception('System messages are not supported') }}{% endif %}"
            "{{ m.content }}{% endfor %}"
        ),
    )
    path = write_records(tmp_path / "r.jsonl", [chat("a", "b"), chat("c", "d", system="s")])
    stats = compute_stats(path, tokenizer=strict)
    assert stats["records"] == 2
    assert sum(stats["total"]["histogram"]["counts"]) == 1
    assert stats["template_errors"] == {
        "count": 1,
        "first": {
            "split": "r",
            "index": 1,
            "line": 4,
            "message": "System messages are not supported",
        },
    }


def test_a_tokenizer_without_template_is_measured_with_the_fallback(tmp_path: Path) -> None:
    from app.datasets.tokenization import clear_cache

    clear_cache()
    llama = load_tokenizer("llama-3.2", cache_dir=tmp_path)
    path = write_records(tmp_path / "r.jsonl", [chat("a", "b")])
    assert compute_stats(path, tokenizer=llama)["template_fallback"] is True
    clear_cache()


def test_the_token_counter_gives_the_length_training_encodes(qwen3: TextTokenizer) -> None:
    count = token_counter(qwen3)
    for conversation in (chat("你好", "世界"), chat("Write a poem.", "Roses are red.", system="s")):
        assert count(conversation) == len(formatting.encode(qwen3, conversation, 10_000).input_ids)


# --- Histograms ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "width"),
    [([0, 7], 1), ([3, 3, 3], 1), ([10, 1990], 100), ([0, 45_000], 5000), ([100, 130], 2)],
)
def test_histogram_bins_have_round_edges(values: list[int], width: int) -> None:
    result = histogram(sorted(values))
    edges = result["edges"]
    assert edges[1] - edges[0] == width
    assert all(edge % width == 0 for edge in edges)
    assert edges[0] <= min(values) and max(values) < edges[-1]
    assert len(result["counts"]) == len(edges) - 1 <= 21
    assert sum(result["counts"]) == len(values)


def test_nice_widths() -> None:
    assert [nice_width(x) for x in (0.3, 1, 1.1, 2.5, 7, 12, 99.5)] == [1, 1, 2, 5, 10, 20, 100]


# --- Charts --------------------------------------------------------------------------------


def render_macro(name: str, chart: object) -> str:
    env = Environment(
        loader=FileSystemLoader(PROJECT_ROOT / "templates"), undefined=StrictUndefined
    )
    template = env.from_string(f'{{% from "_charts.html" import {name} %}}{{{{ {name}(chart) }}}}')
    return template.render(chart=chart)


def test_a_histogram_chart_has_one_bar_per_bin_with_its_count(tmp_path: Path) -> None:
    path = write_records(tmp_path / "r.jsonl", [chat("q" * n, "a" * n) for n in range(1, 400)])
    hist = compute_stats(path)["total"]["histogram"]

    chart = histogram_chart(hist["edges"], hist["counts"], label="Total length", unit="characters")
    html = render_macro("histogram", chart)

    assert len(chart.bars) == len(hist["counts"])
    assert all(chart.plot_left <= b.x and b.x + b.width <= chart.plot_right for b in chart.bars)
    assert all(b.y + b.height == pytest.approx(chart.baseline, abs=0.2) for b in chart.bars)
    assert 2 <= len(chart.x_ticks) <= 9
    assert chart.y_ticks[0][1] == "0"
    assert re.fullmatch(r"0–\d+ characters: \d+ samples", chart.bars[0].title)
    assert html.count("<rect") == len(chart.bars)
    assert "Total length" in html
    assert "style=" not in html and "<script" not in html


def test_stats_charts_draw_every_length_and_the_languages(tmp_path: Path) -> None:
    stats = compute_stats(write_records(tmp_path / "r.jsonl", [chat("你好", "世界")]))
    charts = stats_charts(stats)
    assert set(charts) == {"prompt", "answer", "total", "languages"}
    assert charts["total"].label == "Total length (characters)"
    assert len(charts["total"].bars) == 1
    assert [r.label for r in charts["languages"].rows] == ["Chinese"]


def test_charts_show_an_empty_state() -> None:
    assert histogram_chart([], [], label="Total").empty
    assert histogram_chart([0, 10], [0], label="Total").empty
    assert language_chart(dict.fromkeys(["zh", "latin"], 0)).empty
    html = render_macro("histogram", histogram_chart([], [], label="Total"))
    assert "No samples to show." in html and "<svg" not in html
    assert "No records to show." in render_macro("bars", bar_chart([], label="Languages"))


def test_the_language_chart_lists_languages_largest_first() -> None:
    chart = language_chart({"zh": 1200, "ja": 0, "ko": 3, "latin": 34_000, "other": 0, "none": 1})
    html = render_macro("bars", chart)

    assert [r.label for r in chart.rows] == ["Latin script", "Chinese", "Korean", "No letters"]
    assert chart.rows[0].value_text == "34,000 (97%)"
    assert chart.rows[2].value_text == "3 (<1%)"
    assert chart.rows[0].bar_width == chart.bar_space
    assert chart.rows[2].bar_width >= 1  # a tiny share stays visible
    assert re.search(r"Chinese: 1,200 \(3%\)", html)
    assert "style=" not in html
