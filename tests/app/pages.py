"""Helpers for tests that read the app's HTML pages."""

from __future__ import annotations

import re


def csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "no CSRF token on the page"
    return found.group(1)
