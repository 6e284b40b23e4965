"""Dates, numbers, durations and sizes read in the reader's language (issue 15): the filters
the templates use, in English and in Chinese."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.core.i18n import using_locale
from app.web.rendering import templates

MOMENT = datetime(2026, 12, 5, 6, 7, 8, tzinfo=UTC)
PAGE = (
    "{{ n|number }} | {{ x|number(digits=2) }} | {{ share|percent }} | {{ t|datetime }} | "
    "{{ t|date }} | {{ t|time }} | {{ long|duration }} | {{ short|duration }} | {{ b|size }}"
)


@pytest.mark.parametrize(
    ("locale", "expected"),
    [
        (
            "en",
            "1,234,567 | 0.84 | 26% | Dec 5, 2026 06:07 | Dec 5, 2026 | 06:07:08 | 5h 01m | "
            "3m 07s | 300 bytes",
        ),
        (
            "zh_CN",
            "1,234,567 | 0.84 | 26% | 2026年12月5日 06:07 | 2026年12月5日 | 06:07:08 | "
            "5 小时 01 分 | 3 分 07 秒 | 300 字节",
        ),
    ],
)
def test_the_page_filters_format_in_the_readers_language(locale: str, expected: str) -> None:
    with using_locale(locale):
        text = templates.env.from_string(PAGE).render(
            n=1234567, x=0.8412, share=0.256, t=MOMENT, long=5 * 3600 + 65, short=187, b=300
        )
    assert text == expected
