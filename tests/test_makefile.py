"""The Makefile's test targets name tests that exist: `make test-latest` once ran no test at
all after the reshape moved tests/test_cli_train.py (pytest: "file or directory not found")."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_make_test_latest_names_existing_test_paths() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    line = re.search(r"^LATEST_TESTS \?= (.+)$", makefile, re.MULTILINE)
    assert line is not None
    paths = [word for word in line.group(1).split() if word.startswith("tests")]
    assert paths, line.group(0)
    for path in paths:
        assert (ROOT / path.split("::")[0]).exists(), path
