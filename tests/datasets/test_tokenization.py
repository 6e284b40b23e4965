"""Tokenizers in the web process: the same ids, labels and template as transformers, no torch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
from transformers import AutoTokenizer

from app.core.errors import InvalidInput
from app.datasets import tokenization
from app.datasets.tokenization import (
    TextTokenizer,
    clear_cache,
    export_folder,
    load_tokenizer,
    named_tokenizers,
)
from worker.spec import formatting

Conversation = list[dict[str, str]]

ENGLISH: Conversation = [
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "It is 4."},
    {"role": "user", "content": "And 3 + 3?  Answer in one word."},
    {"role": "assistant", "content": " Six.\n"},
]
CHINESE: Conversation = [
    {"role": "system", "content": "你是一个乐于助人的助手。"},
    {"role": "user", "content": "请把“你好，世界”翻译成英文。"},
    {"role": "assistant", "content": "Hello, world!"},
    {"role": "user", "content": "再翻译成日语，并加一个表情。"},
    {"role": "assistant", "content": "こんにちは、世界！😀"},
]
CHINESE_THINKING: Conversation = [
    {"role": "user", "content": "写一句关于秋天的诗"},
    {"role": "assistant", "content": "<think>\n想一想\n</think>\n\n秋风起兮白云飞"},
    {"role": "user", "content": "再来一句"},
    {"role": "assistant", "content": "落霞与孤鹜齐飞，秋水共长天一色。"},
]
CONVERSATIONS = {"english": ENGLISH, "chinese": CHINESE, "chinese-thinking": CHINESE_THINKING}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh cache for the exported tokenizers. Its GGUF conversions (SmolLM2's takes ~30 s)
    are the persistent ones where TUNELAB_TEST_MODEL_CACHE names a folder, as in the engine's
    tests: the export itself still runs in every session."""
    folder = tmp_path_factory.mktemp("tokenizer-cache")
    persistent = os.environ.get("TUNELAB_TEST_MODEL_CACHE")
    if persistent:
        conversions = Path(persistent) / "gguf"
        conversions.mkdir(parents=True, exist_ok=True)
        (folder / "gguf").symlink_to(conversions, target_is_directory=True)
    return folder


@pytest.fixture(scope="module")
def smollm2(cache_dir: Path) -> TextTokenizer:
    """SmolLM2's tokenizer, exported once (GGUF conversion included, ~30 s) for this module."""
    clear_cache()
    return load_tokenizer("smollm2-135m-instruct", cache_dir=cache_dir)


def tokenizer_folder(name: str, cache_dir: Path) -> Path:
    if name == "smollm2-135m-instruct":
        return export_folder(name, cache_dir)
    entry = tokenization._PACKAGED[name]
    package = tokenization._package_folder(entry.package)
    assert package is not None
    return package / entry.folder


# --- The key property: training's encode gives the same result ------------------------------


@pytest.mark.parametrize("system_prompt", [None, "Answer briefly. 请简短回答。"])
@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "qwen3", "llama-3.2"])
def test_encode_gives_the_ids_and_labels_transformers_gives(
    name: str,
    conversation: str,
    system_prompt: str | None,
    smollm2: TextTokenizer,
    cache_dir: Path,
) -> None:
    ours = smollm2 if name == "smollm2-135m-instruct" else load_tokenizer(name, cache_dir=cache_dir)
    reference = _transformers_tokenizer(str(tokenizer_folder(name, cache_dir)))
    formatting.ensure_chat_template(ours)
    formatting.ensure_chat_template(reference)
    messages = formatting.with_system_prompt(CONVERSATIONS[conversation], system_prompt)

    expected = formatting.encode(reference, messages, 512)
    actual = formatting.encode(ours, messages, 512)

    assert actual.input_ids == expected.input_ids
    assert actual.labels == expected.labels
    assert any(label != formatting.IGNORE_INDEX for label in actual.labels)
    for prompt in (False, True):
        assert formatting.render(ours, messages, generation_prompt=prompt) == formatting.render(
            reference, messages, generation_prompt=prompt
        )


_references: dict[str, object] = {}


def _transformers_tokenizer(folder: str) -> object:
    if folder not in _references:
        _references[folder] = AutoTokenizer.from_pretrained(folder)
    return _references[folder]


def test_truncation_keeps_the_first_tokens_like_transformers(cache_dir: Path) -> None:
    ours = load_tokenizer("qwen3", cache_dir=cache_dir)
    reference = _transformers_tokenizer(str(tokenizer_folder("qwen3", cache_dir)))
    expected = formatting.encode(reference, CHINESE, 20)
    actual = formatting.encode(ours, CHINESE, 20)
    assert actual == expected
    assert len(actual.input_ids) == 20


def test_offsets_are_characters_so_a_split_han_character_maps_to_itself(cache_dir: Path) -> None:
    tokenizer = load_tokenizer("llama-3.2", cache_dir=cache_dir)
    text = "秋水共长天一色😀"
    encoded = tokenizer(text)
    assert len(encoded["input_ids"]) > 1
    for start, end in encoded["offset_mapping"]:
        assert 0 <= start < end <= len(text)
    # The emoji's four bytes take two tokens here; both point at the one character.
    assert encoded["offset_mapping"][-2:] == [(7, 8), (7, 8)]


def test_count_matches_encoding_one_text_at_a_time(cache_dir: Path) -> None:
    tokenizer = load_tokenizer("qwen3", cache_dir=cache_dir)
    texts = ["Hello world", "你好，世界", "", "<|im_start|>user\nhi<|im_end|>"]
    assert tokenizer.count(texts) == [len(tokenizer(t)["input_ids"]) for t in texts]
    assert tokenizer.count([]) == []
    # The chat markers are one token each, as the model sees them.
    assert tokenizer.count(["<|im_start|>"]) == [1]


def test_special_tokens_and_decoding(cache_dir: Path) -> None:
    tokenizer = load_tokenizer("qwen3", cache_dir=cache_dir)
    assert tokenizer.is_fast
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.bos_token is None
    assert tokenizer.eos_token_id is not None
    ids = tokenizer("<|im_start|>你好<|im_end|>")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids[0]) == "<|im_start|>"
    assert tokenizer.convert_ids_to_tokens(ids)[-1] == "<|im_end|>"
    assert tokenizer.decode(ids) == "<|im_start|>你好<|im_end|>"
    assert tokenizer.decode(ids, skip_special_tokens=True) == "你好"


# --- Finding tokenizers --------------------------------------------------------------------


def test_named_tokenizers_offer_the_packaged_ones_and_the_catalog() -> None:
    names = named_tokenizers()
    assert names["qwen3"].startswith("Qwen3")
    assert names["llama-3.2"].startswith("Llama 3.2")
    assert names["smollm2-135m-instruct"] == "SmolLM2 135M Instruct"


def test_the_catalog_copy_agrees_with_the_training_catalog() -> None:
    from worker.training.models import CATALOG

    assert {
        name: (entry.title, entry.package) for name, entry in CATALOG.items()
    } == tokenization.CATALOG_MODELS


def test_an_unknown_name_is_refused_with_the_names_offered(cache_dir: Path) -> None:
    with pytest.raises(InvalidInput, match="Unknown tokenizer 'gpt-17'") as caught:
        load_tokenizer("gpt-17", cache_dir=cache_dir)
    assert "qwen3" in caught.value.message
    assert "smollm2-135m-instruct" in caught.value.message


def test_a_folder_without_tokenizer_json_is_refused(tmp_path: Path) -> None:
    (tmp_path / "vocab.json").write_text("{}")
    with pytest.raises(InvalidInput, match=r"has no tokenizer\.json"):
        load_tokenizer(str(tmp_path), cache_dir=tmp_path)


def test_a_damaged_tokenizer_json_is_refused(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text('{"model": 1}')
    with pytest.raises(InvalidInput, match="Could not read"):
        load_tokenizer(str(tmp_path), cache_dir=tmp_path)


def test_a_local_folder_loads_and_a_changed_folder_reloads(tmp_path: Path, cache_dir: Path) -> None:
    folder = tmp_path / "tok"
    shutil.copytree(tokenizer_folder("qwen3", cache_dir), folder)
    first = load_tokenizer(str(folder), cache_dir=cache_dir)
    assert first.chat_template is not None
    assert load_tokenizer(str(folder), cache_dir=cache_dir) is first

    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = "{{ messages[0]['content'] }}"
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "tokenizer.json").touch()  # a new save rewrites tokenizer.json too
    again = load_tokenizer(str(folder), cache_dir=cache_dir)
    assert again is not first
    assert again.apply_chat_template([{"role": "user", "content": "x"}]) == "x"


def test_the_chat_template_file_wins_over_tokenizer_config(tmp_path: Path, cache_dir: Path) -> None:
    shutil.copytree(tokenizer_folder("qwen3", cache_dir), tmp_path, dirs_exist_ok=True)
    (tmp_path / "chat_template.jinja").write_text("jinja file")
    assert TextTokenizer.from_folder(tmp_path).chat_template == "jinja file"


def test_named_templates_use_the_default_one(tmp_path: Path, cache_dir: Path) -> None:
    shutil.copy(tokenizer_folder("qwen3", cache_dir) / "tokenizer.json", tmp_path)
    templates = [{"name": "tool_use", "template": "tools"}, {"name": "default", "template": "chat"}]
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": templates, "eos_token": {"content": "<|im_end|>"}})
    )
    tokenizer = TextTokenizer.from_folder(tmp_path)
    assert tokenizer.chat_template == "chat"
    assert tokenizer.eos_token == "<|im_end|>"


def test_the_legacy_chat_template_json_is_read(tmp_path: Path, cache_dir: Path) -> None:
    shutil.copy(tokenizer_folder("qwen3", cache_dir) / "tokenizer.json", tmp_path)
    (tmp_path / "chat_template.json").write_text(json.dumps({"chat_template": "legacy"}))
    assert TextTokenizer.from_folder(tmp_path).chat_template == "legacy"


def test_a_tokenizer_without_template_takes_the_fallback(cache_dir: Path) -> None:
    clear_cache()
    tokenizer = load_tokenizer("llama-3.2", cache_dir=cache_dir)
    assert tokenizer.chat_template is None
    with pytest.raises(InvalidInput, match="no chat template"):
        tokenizer.apply_chat_template(ENGLISH)
    assert formatting.ensure_chat_template(tokenizer) is True
    text = tokenizer.apply_chat_template(ENGLISH[:1], add_generation_prompt=True)
    assert text == "<|im_start|>user\nWhat is 2 + 2?<|end_of_text|>\n<|im_start|>assistant\n"
    clear_cache()


# --- Exporting a model's tokenizer ----------------------------------------------------------


def test_a_catalog_model_is_exported_once_and_then_read_from_the_cache(
    smollm2: TextTokenizer, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = export_folder("smollm2-135m-instruct", cache_dir)
    assert folder == cache_dir / "tokenizers" / "smollm2-135m-instruct"
    assert {"tokenizer.json", "chat_template.jinja"} <= {p.name for p in folder.iterdir()}
    assert smollm2.chat_template is not None and "<|im_start|>" in smollm2.chat_template
    assert smollm2.eos_token == "<|im_end|>"
    # No staging folders are left behind.
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".")] == []

    def no_subprocess(*args: object, **kwargs: object) -> None:
        raise AssertionError("the export ran again")

    monkeypatch.setattr(subprocess, "run", no_subprocess)
    clear_cache()
    again = load_tokenizer("smollm2-135m-instruct", cache_dir=cache_dir)
    assert again is not smollm2
    assert again("<|im_start|>user")["input_ids"] == smollm2("<|im_start|>user")["input_ids"]
    assert load_tokenizer("smollm2-135m-instruct", cache_dir=cache_dir) is again


def test_a_broken_gguf_file_reports_why_the_export_failed(tmp_path: Path) -> None:
    broken = tmp_path / "broken.Q4_0.gguf"
    broken.write_bytes(b"not a gguf file")
    with pytest.raises(InvalidInput, match="Could not export the tokenizer") as caught:
        load_tokenizer(str(broken), cache_dir=tmp_path)
    assert "GGUF" in caught.value.message
    assert not (tmp_path / "tokenizers" / tokenization._gguf_slug(broken)).exists()


# --- Chat template rendering ----------------------------------------------------------------


def _with_template(tokenizer: TextTokenizer, template: str) -> TextTokenizer:
    return TextTokenizer(
        tokenizer.backend,
        name="custom",
        chat_template=template,
        special_tokens=tokenizer.special_tokens_map,
    )


def test_templates_get_special_tokens_tojson_and_raise_exception(cache_dir: Path) -> None:
    base = load_tokenizer("qwen3", cache_dir=cache_dir)
    template = (
        "{% for m in messages %}{{ m | tojson }}{% endfor %}{{ eos_token }}"
        "{% if add_generation_prompt %}{{ raise_exception('no prompts here') }}{% endif %}"
    )
    tokenizer = _with_template(base, template)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "<b>你好</b> & co"}])
    # Unlike Jinja's own tojson: no HTML escaping, no \u escapes for Chinese.
    assert text == '{"role": "user", "content": "<b>你好</b> & co"}<|im_end|>'
    with pytest.raises(jinja2.exceptions.TemplateError, match="no prompts here"):
        tokenizer.apply_chat_template(ENGLISH, add_generation_prompt=True)


def test_templates_run_sandboxed(cache_dir: Path) -> None:
    base = load_tokenizer("qwen3", cache_dir=cache_dir)
    tokenizer = _with_template(base, "{{ messages.__class__.__mro__ }}")
    with pytest.raises(jinja2.exceptions.SecurityError):
        tokenizer.apply_chat_template(ENGLISH)


def test_generation_blocks_render_their_body(cache_dir: Path) -> None:
    base = load_tokenizer("qwen3", cache_dir=cache_dir)
    template = (
        "{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}[{{ m.content }}]"
        "{% endgeneration %}{% else %}{{ m.content }}{% endif %}{% endfor %}"
    )
    tokenizer = _with_template(base, template)
    assert tokenizer.apply_chat_template(ENGLISH[:2]) == "What is 2 + 2?[It is 4.]"
    assert (
        tokenizer.apply_chat_template(ENGLISH[:2], tokenize=True)
        == tokenizer("What is 2 + 2?[It is 4.]")["input_ids"]
    )


def test_an_invalid_template_is_reported(cache_dir: Path) -> None:
    tokenizer = _with_template(load_tokenizer("qwen3", cache_dir=cache_dir), "{% for %}")
    with pytest.raises(InvalidInput, match="not valid Jinja"):
        tokenizer.apply_chat_template(ENGLISH)


# --- The web process stays free of torch ----------------------------------------------------


def test_the_services_import_neither_torch_nor_transformers() -> None:
    code = (
        "import sys\n"
        "import app.datasets.tokenization, app.datasets.stats\n"
        "import app.datasets.preview, app.web.charts\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(done.stdout.split())
    assert not loaded & {"torch", "transformers", "peft"}
