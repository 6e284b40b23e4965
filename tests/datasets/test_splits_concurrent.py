"""Two imports of the same file at once share one content-addressed version folder: each
writes its splits under part files of its own, so neither renames the other's away (found by
bench/chaos.py's load scenario: concurrent 1 MB uploads of one file answered 500)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from app.datasets.splits import SPLITS, write_splits

LINES = [(SPLITS[i % 3], f'{{"n": {i}, "text": "第{i}条"}}\n'.encode()) for i in range(30)]


def test_another_import_finishing_midway_leaves_both_imports_whole(tmp_path: Path) -> None:
    out = tmp_path / "v"

    def labelled() -> Iterator[tuple[str, bytes]]:
        for i, item in enumerate(LINES):
            if i == 15:  # the other import of the same content runs to its end meanwhile
                assert write_splits(out, iter(LINES)) == {"train": 10, "validation": 10, "test": 10}
            yield item

    assert write_splits(out, labelled()) == {"train": 10, "validation": 10, "test": 10}
    for name in SPLITS:
        expected = b"".join(line for split, line in LINES if split == name)
        assert (out / f"{name}.jsonl").read_bytes() == expected
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.jsonl" for n in SPLITS)
