"""New versions from old: cleaning (duplicates, over-long and too-short records) and
re-splitting. The source version never changes; the new one records its lineage."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.errors import InvalidInput
from app.datasets import splits as dataset_splits
from app.datasets import stats as dataset_stats
from app.datasets import tokenization
from app.datasets.splits import SPLITS
from app.models import Dataset, DatasetVersion, User
from app.schemas.dataset import CleanRequest, SplitOptions
from app.services import datasets


def clean_version(
    session: Session,
    *,
    settings: Settings,
    version: DatasetVersion,
    options: CleanRequest,
    user: User,
) -> DatasetVersion:
    """A new version without duplicates / too-long / too-short records; each record keeps its
    split, and a copy of a test or validation record is removed from train (no leakage)."""
    dataset = session.get(Dataset, version.dataset_id)
    assert dataset is not None
    steps = options.model_dump(exclude_none=True)
    digest = datasets.version_digest({"parent": version.digest, "clean": steps})
    existing = datasets.version_by_digest(session, dataset, digest)
    if existing is not None:
        return existing
    counter: Callable[[list[dict[str, str]]], int] | None = None
    if options.max_tokens is not None and options.tokenizer:
        tok = tokenization.load_tokenizer(options.tokenizer, cache_dir=settings.model_cache_dir)
        counter = dataset_stats.token_counter(tok)

    removed = {"duplicates": 0, "too_long": 0, "short_answers": 0}
    seen: set[bytes] = set()
    sources = datasets.split_files(settings, version)

    def kept() -> Iterator[tuple[str, bytes]]:
        # Held-out splits first, so a duplicate is dropped from train rather than from test.
        for name in ("test", "validation", "train"):
            path = sources.get(name)
            if path is None or not path.exists():
                continue
            for line in datasets.record_lines(path):
                messages = orjson.loads(line)["messages"]
                if options.dedupe:
                    digest_ = hashlib.blake2b(orjson.dumps(messages), digest_size=16).digest()
                    if digest_ in seen:
                        removed["duplicates"] += 1
                        continue
                    seen.add(digest_)
                if options.min_answer_chars is not None and any(
                    m["role"] == "assistant"
                    and len(m["content"].strip()) < options.min_answer_chars
                    for m in messages
                ):
                    removed["short_answers"] += 1
                    continue
                if options.max_chars is not None and (
                    sum(len(m["content"]) for m in messages) > options.max_chars
                ):
                    removed["too_long"] += 1
                    continue
                if (
                    counter is not None
                    and options.max_tokens is not None
                    and counter(messages) > options.max_tokens
                ):
                    removed["too_long"] += 1
                    continue
                yield name, line

    version_dir = datasets.version_dir(settings, digest)
    counts = dataset_splits.write_splits(version_dir, kept())
    if not any(removed.values()):
        shutil.rmtree(version_dir, ignore_errors=True)
        raise InvalidInput(
            "nothing to clean: no record matched these steps, so the version stays as it is"
        )
    if counts["train"] == 0:
        shutil.rmtree(version_dir, ignore_errors=True)
        raise InvalidInput("these steps would remove every training record: loosen them")
    new = _derived_version(
        session,
        settings,
        dataset,
        version,
        digest=digest,
        version_dir=version_dir,
        split={**version.split, "counts": counts}
        if version.split
        else {"method": "none", "counts": counts},
        lineage={
            "operation": "clean",
            "parent": version.number,
            "options": steps,
            "removed": removed,
        },
        user=user,
    )
    return new


def resplit_version(
    session: Session,
    *,
    settings: Settings,
    version: DatasetVersion,
    options: SplitOptions,
    user: User,
) -> DatasetVersion:
    """The same records under a new train / validation / test split, as a new version."""
    dataset = session.get(Dataset, version.dataset_id)
    assert dataset is not None
    digest = datasets.version_digest({"parent": version.digest, "split": options.model_dump()})
    existing = datasets.version_by_digest(session, dataset, digest)
    if existing is not None:
        return existing
    version_dir = datasets.version_dir(settings, digest)
    counts = dataset_splits.split_records(
        datasets.all_record_files(settings, version),
        version_dir,
        validation=options.validation,
        test=options.test,
        seed=options.seed,
    )
    return _derived_version(
        session,
        settings,
        dataset,
        version,
        digest=digest,
        version_dir=version_dir,
        split={
            "method": "ratio",
            "seed": options.seed,
            "ratios": {"validation": options.validation, "test": options.test},
            "counts": counts.as_dict(),
        },
        lineage={"operation": "split", "parent": version.number, "options": options.model_dump()},
        user=user,
    )


def _derived_version(
    session: Session,
    settings: Settings,
    dataset: Dataset,
    parent: DatasetVersion,
    *,
    digest: str,
    version_dir: Path,
    split: dict[str, Any],
    lineage: dict[str, Any],
    user: User,
) -> DatasetVersion:
    files = [version_dir / f"{s}.jsonl" for s in SPLITS]
    return datasets.add_version(
        session,
        dataset,
        digest=digest,
        sha256=parent.sha256,
        format=parent.format,
        container=parent.container,
        records=sum(split["counts"].values()),
        # Derived files are tunelab's, not the user's upload: they do not count again.
        size_bytes=0,
        original_filename=parent.original_filename,
        raw_path=parent.raw_path,
        records_path=str((version_dir / "train.jsonl").relative_to(settings.data_dir)),
        stats=dataset_stats.compute_stats_of(files),
        warnings=[],
        split=split,
        lineage=lineage,
        parent_id=parent.id,
        dropped_invalid=0,
        uploaded_by_id=user.id,
    )
