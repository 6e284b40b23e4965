"""Deterministic train / validation / test splits of normalized records.

A record's split depends only on the seed and its content, never on file order or machine: its
key is a keyed hash of its messages, records are ranked by key, and the lowest ranks go to
test, the next to validation. Identical records share a key, so duplicates land side by side
and rarely straddle two splits. Exact counts (not a coin flip per record) so "5%" of 200
records is 10 every time.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from app.core.errors import FieldError, InvalidInput

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class SplitCounts:
    train: int
    validation: int
    test: int

    def as_dict(self) -> dict[str, int]:
        return {"train": self.train, "validation": self.validation, "test": self.test}


def plan_counts(records: int, *, validation: float, test: float) -> SplitCounts:
    """How many records each split gets; refuses a split that leaves nothing to train on."""
    for name, ratio in (("validation", validation), ("test", test)):
        if not 0 <= ratio < 1:
            raise InvalidInput(
                f"`{name}` must be a fraction from 0 to 1 (0.05 is 5%)",
                errors=[FieldError(field=f"split.{name}", message="use a fraction from 0 to 1")],
            )
    n_test = _share(records, test)
    n_val = _share(records, validation)
    if records - n_test - n_val < 1:
        raise InvalidInput(
            f"a split of {validation:.0%} validation and {test:.0%} test leaves no record of "
            f"{records} to train on: use smaller fractions",
            errors=[FieldError(field="split", message="leaves no training records")],
        )
    return SplitCounts(records - n_test - n_val, n_val, n_test)


def _share(records: int, ratio: float) -> int:
    if ratio <= 0:
        return 0
    # At least one record once there are enough to spare one, so "5%" of 30 is not zero.
    return max(round(records * ratio), 1 if records >= 20 else 0)


def record_key(seed: int, messages: object) -> int:
    digest = hashlib.blake2b(
        orjson.dumps(messages), digest_size=8, key=seed.to_bytes(8, "little", signed=True)
    ).digest()
    return int.from_bytes(digest, "little")


def iter_lines(paths: Sequence[Path]) -> Iterator[bytes]:
    for path in paths:
        with path.open("rb") as f:
            for line in f:
                if line.strip():
                    yield line


def split_records(
    sources: Sequence[Path], out_dir: Path, *, validation: float, test: float, seed: int
) -> SplitCounts:
    """Split the records of ``sources`` (read in order) into train/validation/test files in
    ``out_dir``, keeping each split in source order. Memory: 17 bytes per record."""
    keys_list: list[int] = []
    for line in iter_lines(sources):
        keys_list.append(record_key(seed, orjson.loads(line)["messages"]))
    keys = np.fromiter(keys_list, dtype=np.uint64, count=len(keys_list))
    del keys_list
    counts = plan_counts(len(keys), validation=validation, test=test)
    order = np.argsort(keys, kind="stable")
    membership = np.zeros(len(keys), dtype=np.uint8)  # 0 train, 1 validation, 2 test
    membership[order[: counts.test]] = 2
    membership[order[counts.test : counts.test + counts.validation]] = 1
    labels = [SPLITS[int(m)] for m in membership]
    write_splits(out_dir, ((labels[i], line) for i, line in enumerate(iter_lines(sources))))
    return counts


def write_splits(out_dir: Path, labelled: Iterator[tuple[str, bytes]]) -> dict[str, int]:
    """Write (split, line) pairs to out_dir/{split}.jsonl atomically; returns the counts."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # A name of this writer's own: imports of the same content share the content-addressed
    # folder, and two at once must not write into (or rename away) each other's part files.
    mine = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    tmp = {name: out_dir / f".{name}.jsonl.{mine}.part" for name in SPLITS}
    files = {name: path.open("wb") for name, path in tmp.items()}
    counts = dict.fromkeys(SPLITS, 0)
    try:
        for name, line in labelled:
            files[name].write(line if line.endswith(b"\n") else line + b"\n")
            counts[name] += 1
        for f in files.values():
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        for name, f in files.items():
            f.close()
            tmp[name].unlink(missing_ok=True)
        raise
    for name, f in files.items():
        f.close()
        os.replace(tmp[name], out_dir / f"{name}.jsonl")
    return counts
