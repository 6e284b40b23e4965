"""Every model, imported here so that Base.metadata is complete for Alembic and the tests."""

from app.models.artifact import Artifact
from app.models.auth import ApiToken, LoginAttempt, LoginLink, ModelPermission, WebSession
from app.models.dataset import Dataset, DatasetUpload, DatasetVersion, UploadStatus
from app.models.deploy import Deployment, Export
from app.models.evaluation import EvalSample, EvalStatus, Evaluation
from app.models.form_submission import FormSubmission
from app.models.job import Job, JobEvent, JobStatus, MetricPoint
from app.models.lease import Leased
from app.models.openai_compat import OpenAIFile, OpenAIJob, OpenAIProject
from app.models.project import Project
from app.models.review import (
    CampaignReviewer,
    CampaignStatus,
    ItemStatus,
    Rating,
    ReviewAnswerRun,
    ReviewAssignment,
    ReviewCampaign,
    ReviewItem,
)
from app.models.user import AuditEvent, ProjectMember, Role, User
from app.models.worker import WorkerRecord

__all__ = [
    "ApiToken",
    "Artifact",
    "AuditEvent",
    "CampaignReviewer",
    "CampaignStatus",
    "Dataset",
    "DatasetUpload",
    "DatasetVersion",
    "Deployment",
    "EvalSample",
    "EvalStatus",
    "Evaluation",
    "Export",
    "FormSubmission",
    "ItemStatus",
    "Job",
    "JobEvent",
    "JobStatus",
    "Leased",
    "LoginAttempt",
    "LoginLink",
    "MetricPoint",
    "ModelPermission",
    "OpenAIFile",
    "OpenAIJob",
    "OpenAIProject",
    "Project",
    "ProjectMember",
    "Rating",
    "ReviewAnswerRun",
    "ReviewAssignment",
    "ReviewCampaign",
    "ReviewItem",
    "Role",
    "UploadStatus",
    "User",
    "WebSession",
    "WorkerRecord",
]
