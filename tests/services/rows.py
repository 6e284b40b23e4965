"""Rows the service tests build on: a project with a dataset and its first (empty) version."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.models import Dataset, DatasetVersion, Project


def first_version(db: Session, project: Project) -> DatasetVersion:
    """A dataset of ``project`` with an empty first version."""
    dataset = Dataset(project_id=project.id, name="d")
    db.add(dataset)
    db.flush()
    version = DatasetVersion(
        dataset_id=dataset.id,
        number=1,
        sha256="0" * 64,
        digest="0" * 64,
        format="alpaca",
        container="jsonl",
        records=1,
        size_bytes=1,
        records_path="x",
        raw_path="y",
    )
    db.add(version)
    db.flush()
    return version


def project_with_version(
    db: Session, name: str = "p", priority: int = 0
) -> tuple[Project, DatasetVersion]:
    project = Project(name=name, priority=priority)
    db.add(project)
    db.flush()
    return project, first_version(db, project)
