"""Numbers as a person reads them, for pages, errors and the CLI alike: sizes, durations and
the short form of an id."""

from __future__ import annotations

import uuid


def size_in_words(count: float) -> str:
    """A byte count: "2 GB", "100 MB", "1.5 MB", "300 bytes"."""
    gb = count / 1024**3
    if gb >= 1:
        return f"{gb:.1f}".removesuffix(".0") + " GB"
    mb = count / (1024 * 1024)
    if mb >= 10:
        return f"{mb:.0f} MB"
    if mb >= 1:
        return f"{mb:.1f} MB"
    return f"{int(count):,} bytes"


def clock_duration(seconds: float) -> str:
    """A time left or taken: "2h 05m", "3m 07s", "45s"."""
    whole = max(0, round(seconds))
    if whole >= 3600:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    if whole >= 60:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole}s"


def short_id(value: uuid.UUID | str) -> str:
    """The first 8 characters of an id: enough to tell rows apart on a page."""
    return str(value)[:8]
