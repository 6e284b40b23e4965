"""Every model, imported here so that Base.metadata is complete for Alembic and the tests."""

from app.models.artifact import Artifact
from app.models.dataset import Dataset, DatasetVersion
from app.models.job import Job, JobEvent, JobStatus, MetricPoint
from app.models.project import Project

__all__ = [
    "Artifact",
    "Dataset",
    "DatasetVersion",
    "Job",
    "JobEvent",
    "JobStatus",
    "MetricPoint",
    "Project",
]
