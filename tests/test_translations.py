"""Chinese and English throughout: every visible string of the templates is marked for
translation, and every marked message (templates and Python) has its Chinese translation.

Run `make translations` after adding or changing a message: it extracts the messages, updates
the catalogs (then translate the new entries of app/translations/zh_CN/LC_MESSAGES/messages.po)
and compiles them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from app.core import i18n, paths
from app.core.words import clock_duration, size_in_words

REPO = Path(__file__).resolve().parents[1]
ZH_PO = paths.TRANSLATIONS_DIR / "zh_CN" / "LC_MESSAGES" / "messages.po"

# Text that reads the same in every language: the product's name, symbols.
SAME_IN_EVERY_LANGUAGE = {"tunelab", "API", "v", "B", "GB", "MB", "UTC"}
VISIBLE_ATTRIBUTES = ("placeholder", "title", "aria-label", "alt")


def unmarked_strings(source: str) -> list[str]:
    """The visible text of a template that is not marked for translation: text between tags,
    visible attributes and string literals shown by ``{{ … }}``, outside ``{% trans %}``
    blocks and ``_()``. Code (``<code>``, ``<pre>``), scripts, styles and a textarea's
    default input are not prose."""
    text = re.sub(r"\{#.*?#\}", "", source, flags=re.S)
    text = re.sub(r"\{%-?\s*trans\b.*?%\}.*?\{%-?\s*endtrans\s*-?%\}", "", text, flags=re.S)
    text = re.sub(r"<(script|style|code|pre|textarea)\b.*?</\1>", "", text, flags=re.S)
    # Attributes that are never read: classes, data for scripts.
    text = re.sub(r'\s(class|data-[\w-]+)="[^"]*"', " ", text)
    found: list[str] = []
    # {{ "words" if … else "words" }}: literals shown as they are.
    for expression in re.findall(r"\{\{(.*?)\}\}", text, flags=re.S):
        bare = re.sub(r"_\(\s*(\"[^\"]*\"|'[^']*')", "", expression)  # _("…") is marked
        for literal in re.findall(
            r"(?:^|\belse\b|\bor\b|\bif\b)\s*(\"[^\"]*\"|'[^']*')\s*(?=\bif\b|\belse\b|$)",
            bare.strip(),
        ):
            words = literal[1:-1]
            if re.search(r"[A-Za-z]{2,}", words) and words.strip() not in SAME_IN_EVERY_LANGUAGE:
                found.append(words)
    for name in VISIBLE_ATTRIBUTES:
        for value in re.findall(rf'\b{name}="([^"]*)"', text):
            bare = re.sub(r"\{\{.*?\}\}", "", value)
            if re.search(r"[A-Za-z]{2,}", bare):
                found.append(f'{name}="{value}"')
    text = re.sub(r"\{\{.*?\}\}", " ", text, flags=re.S)
    text = re.sub(r"\{%.*?%\}", " ", text, flags=re.S)
    text = re.sub(r"<[^>]*>", " ", text, flags=re.S)
    text = re.sub(r"&[a-z#0-9]+;", " ", text)
    for chunk in re.split(r"\s{2,}|\n", text):
        chunk = chunk.strip(" ·—–/|()[]:,.;")
        if re.search(r"[A-Za-z]{2,}", chunk) and chunk not in SAME_IN_EVERY_LANGUAGE:
            found.append(chunk)
    return found


def test_the_scanner_finds_unmarked_text() -> None:
    assert unmarked_strings("<p>Hello <b>world</b></p>") == ["Hello", "world"]
    assert unmarked_strings('<input placeholder="e.g. CI">') == ['placeholder="e.g. CI"']
    assert unmarked_strings('{{ "never" if x else "no" }}') == ["never", "no"]
    assert unmarked_strings("{% trans %}Hello{% endtrans %} {{ _('World') }}") == []
    assert unmarked_strings("<input placeholder=\"{{ _('e.g. CI') }}\"> <code>x y</code>") == []


def test_every_visible_template_string_is_marked_for_translation() -> None:
    unmarked = {
        str(path.relative_to(paths.TEMPLATES_DIR)): found
        for path in sorted(paths.TEMPLATES_DIR.rglob("*.html"))
        if (found := unmarked_strings(path.read_text(encoding="utf-8")))
    }
    assert unmarked == {}, "wrap these in {% trans %}…{% endtrans %} or _('…')"


def _extracted() -> set[str]:
    method_map = [
        ("app/**.py", "python"),
        ("worker/spec/**.py", "python"),
        ("templates/**.html", "jinja2"),
    ]
    # As babel.cfg says (what `make translations` runs).
    options = {
        "templates/**.html": {
            "extensions": "jinja2.ext.i18n",
            "trimmed": "true",
            "newstyle_gettext": "true",
        }
    }
    ids: set[str] = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
        str(REPO), method_map=method_map, options_map=options, keywords=_KEYWORDS
    ):
        ids.add(message if isinstance(message, str) else message[0])
    return ids


# The Makefile's BABEL_KEYWORDS, and gettext's own.
_ERRORS = ["InvalidInput", "NotFound", "Conflict", "Forbidden", "Unauthorized", "TooManyRequests"]
_ERRORS += ["PayloadTooLarge", "UnsupportedMediaType", "InvalidDataset", "TunelabError"]
_ERRORS += ["CriterionError"]
_KEYWORDS: dict[str, object] = {"_": None, "gettext": None, "ngettext": (1, 2), "N_": None}
_KEYWORDS |= {name: None for name in _ERRORS} | {"on": (2,)}


def test_make_translations_extracts_what_this_test_checks() -> None:
    makefile = (REPO / "Makefile").read_text()
    words = re.search(r"BABEL_KEYWORDS := ((?:.*\\\n)*.*)", makefile)
    assert words is not None
    listed = set(words.group(1).replace("\\\n", " ").split())
    assert listed == {"N_", "ngettext:1,2", "on:2", *_ERRORS}


def test_every_message_has_its_chinese_translation() -> None:
    with ZH_PO.open("rb") as fp:
        catalog = read_po(fp, locale="zh_CN")
    translated = {
        (m.id if isinstance(m.id, str) else m.id[0])
        for m in catalog
        if m.id and not m.fuzzy and all(m.string if isinstance(m.string, tuple) else [m.string])
    }
    missing = sorted(_extracted() - translated)
    assert missing == [], "run `make translations` and translate these in " + str(ZH_PO)


@pytest.mark.parametrize(
    ("locale", "size", "duration"),
    [("en", "12,345 bytes", "2h 05m"), ("zh_CN", "12,345 字节", "2 小时 05 分")],
)
def test_sizes_and_durations_read_in_the_language(locale: str, size: str, duration: str) -> None:
    with i18n.using_locale(locale):
        assert size_in_words(12345) == size
        assert clock_duration(7500) == duration


def test_the_language_comes_from_the_setting_then_the_cookie_then_the_browser() -> None:
    header = "zh-CN,zh;q=0.9,en;q=0.8"
    assert i18n.choose(accept_language=header) == "zh_CN"
    assert i18n.choose(accept_language="fr-FR, en;q=0.5") == "en"
    assert i18n.choose(accept_language="en-US,zh;q=0.5") == "en"
    assert i18n.choose(accept_language="zh-TW") == "zh_CN"
    assert i18n.choose(accept_language="fr") == "en"
    assert i18n.choose(cookie="en", accept_language=header) == "en"
    assert i18n.choose(user="zh_CN", cookie="en", accept_language="en") == "zh_CN"
    assert i18n.choose(user=None, cookie="bogus", accept_language=None) == "en"


def test_the_cli_speaks_the_terminals_language() -> None:
    assert i18n.from_environment({"LANG": "zh_CN.UTF-8"}) == "zh_CN"
    assert i18n.from_environment({"LANGUAGE": "zh_CN:en", "LANG": "en_US.UTF-8"}) == "zh_CN"
    assert i18n.from_environment({"LANG": "C.UTF-8"}) == "en"
    assert i18n.from_environment({"TUNELAB_LANGUAGE": "en", "LANG": "zh_CN.UTF-8"}) == "en"
    assert i18n.from_environment({}) == "en"


def test_cli_errors_read_in_chinese_with_the_servers_own_words() -> None:
    import httpx

    from app.cli.accounts import error_line
    from app.cli.http import CliError, _raise_for

    request = httpx.Request("POST", "http://127.0.0.1:8000/api/v1/projects")
    body = {
        "detail": "name: String should have at least 1 character",
        "message": "名称：请至少输入 1 个字符。",
        "errors": [{"field": "name", "message": "请至少输入 1 个字符。", "line": None}],
    }
    response = httpx.Response(422, json=body, request=request)
    with i18n.using_locale("zh_CN"), pytest.raises(CliError) as caught:
        _raise_for(response)
    assert caught.value.message.splitlines()[0] == "名称：请至少输入 1 个字符。"
    assert "  name: 请至少输入 1 个字符。" in caught.value.message
    with pytest.raises(CliError) as english:
        _raise_for(response)
    assert english.value.message.startswith("name: String should have")
    with i18n.using_locale("zh_CN"):
        assert error_line("not found") == "错误：未找到"
    assert error_line("not found") == "error: not found"


def test_service_and_validation_messages_read_in_chinese() -> None:
    from app.core.messages import translate_message

    with i18n.using_locale("zh_CN"):
        assert translate_message("project not found") == "未找到项目"
        assert translate_message("Input should be greater than 0") == "请输入大于 0 的数。"
        assert translate_message("Field required") == "此项为必填。"
    # English stays as it was, less pydantic's "Value error, ".
    assert translate_message("Value error, the criterion is empty") == "the criterion is empty"
    assert translate_message("project not found") == "project not found"


def test_the_patterns_still_match_what_the_code_says() -> None:
    """The messages with values in them are matched by pattern (app/core/messages.py): made
    here by the code itself, each must come out in Chinese, so a reworded message fails."""
    from app.core.messages import translate_message
    from worker.spec.criteria import check_criteria

    texts = [
        "微调后的模型要比直接提示基础模型回答得更好",
        "rogueL >= 0.4",
        "rougeL >= 0.4 bleu >= 20",
        "",
    ]
    problems = [message for _, message in check_criteria(texts)]
    assert len(problems) == len(texts)
    with i18n.using_locale("zh_CN"):
        for message in problems:
            translated = translate_message(message)
            assert re.search(r"[\u4e00-\u9fff]", translated.replace(texts[0], "")), message
        first = translate_message(f"success criterion 1: {problems[0]}")
        assert first.startswith("第 1 条成功标准：无法理解“微调后的模型")


def test_statuses_read_in_the_language() -> None:
    from app.core.messages import status_text

    with i18n.using_locale("zh_CN"):
        assert status_text("running") == "运行中"
        assert status_text("succeeded") == "已成功"
        assert status_text("something-new") == "something-new"
    assert status_text("succeeded") == "succeeded"


def test_the_method_words_are_the_methods_own() -> None:
    from app.web.method_words import METHOD_WORDS, PRESET_WORDS
    from worker.spec.config import PRESETS
    from worker.spec.methods import METHODS

    words = [w for m in METHODS.values() for w in (m.title, m.description)]
    assert words == METHOD_WORDS, "copy the new words into app/web/method_words.py"
    assert list(PRESETS) == PRESET_WORDS


def test_a_split_that_leaves_nothing_to_train_on_is_refused_in_chinese() -> None:
    from app.core.errors import InvalidInput
    from app.core.messages import translate_message
    from app.datasets.splits import plan_counts

    with pytest.raises(InvalidInput) as caught:
        plan_counts(2, validation=0.5, test=0.5)
    with i18n.using_locale("zh_CN"):
        assert translate_message(caught.value.message).startswith("按验证集 50%、测试集 50% 划分")
        assert translate_message(caught.value.errors[0].message) == "划分后没有剩下训练记录"
