"""Numbers as a person reads them, for pages, errors and the CLI alike: sizes, durations and
the short form of an id, in the language of the request (app.core.i18n)."""

from __future__ import annotations

import unicodedata
import uuid

from app.core.i18n import _, number


def size_in_words(count: float) -> str:
    """A byte count: "2 GB", "100 MB", "1.5 MB", "300 bytes" (“300 字节”)."""
    gb = count / 1024**3
    if gb >= 1:
        return number(gb, digits=1) + " GB"
    mb = count / (1024 * 1024)
    if mb >= 10:
        return number(mb, digits=0) + " MB"
    if mb >= 1:
        return number(mb, digits=1) + " MB"
    return _("%(count)s bytes", count=number(int(count)))


def clock_duration(seconds: float) -> str:
    """A time left or taken: "2h 05m", "3m 07s", "45s" (“2 小时 05 分”, “3 分 07 秒”, “45 秒”)."""
    whole = max(0, round(seconds))
    if whole >= 3600:
        minutes = f"{whole % 3600 // 60:02d}"
        return _("%(h)sh %(m)sm", h=whole // 3600, m=minutes)
    if whole >= 60:
        secs = f"{whole % 60:02d}"
        return _("%(m)sm %(s)ss", m=whole // 60, s=secs)
    return _("%(s)ss", s=whole)


def short_id(value: uuid.UUID | str) -> str:
    """The first 8 characters of an id: enough to tell rows apart on a page."""
    return str(value)[:8]


def display_width(text: str) -> int:
    """Terminal columns of ``text``: wide (CJK) characters take two, combining marks none."""
    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in ("W", "F") else 1
        for c in text
    )


def pad(text: str, width: int, *, right: bool = False) -> str:
    """``text`` filled with spaces to ``width`` terminal columns (on the left when ``right``)."""
    gap = " " * max(0, width - display_width(text))
    return gap + text if right else text + gap
