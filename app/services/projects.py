"""The goal a project states, and the lists every page and route starts from."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Select, delete, func, select
from sqlalchemy.orm import Session

from app.core.errors import Conflict, FieldError, InvalidInput, NotFound
from app.core.i18n import N_
from app.models import (
    Dataset,
    Deployment,
    EvalSample,
    EvalStatus,
    Evaluation,
    Export,
    Job,
    JobStatus,
    Project,
    User,
)
from app.schemas.project import ProjectCreate
from app.services import access
from app.services.accounts import audit
from worker.spec.criteria import check_criteria


def create_project(session: Session, *, data: ProjectCreate, creator: User) -> Project:
    """Create a project from a validated goal; its creator becomes its first member."""
    check_success_criteria(data.success_criteria)
    project = Project(**data.model_dump(), created_by_id=creator.id)
    session.add(project)
    session.flush()
    access.add_member(session, project=project, user=creator, actor=creator)
    return project


def check_success_criteria(criteria: list[str]) -> None:
    """Refuse criteria the evaluation could never check, naming each one and why."""
    problems = check_criteria(criteria)
    if problems:
        raise InvalidInput(
            f"success criterion {problems[0][0] + 1}: {problems[0][1]}",
            errors=[FieldError(field=f"success_criteria.{i}", message=m) for i, m in problems],
        )


def set_priority(session: Session, *, project: Project, priority: int) -> Project:
    """Set whose waiting jobs go first (app.services.leases.claim_next)."""
    if not -100 <= priority <= 100:
        raise InvalidInput(
            "the priority must be a whole number from -100 to 100",
            errors=[
                FieldError(
                    field="priority", message="the priority must be a whole number from -100 to 100"
                )
            ],
        )
    project.priority = priority
    session.flush()
    return project


def get_project(session: Session, *, project_id: uuid.UUID) -> Project:
    """Return the project or raise NotFound."""
    project = session.get(Project, project_id)
    if project is None:
        raise NotFound("project not found")
    return project


def list_projects(
    session: Session, *, user: User, limit: int, offset: int
) -> tuple[list[Project], int]:
    """The projects ``user`` may see, newest first, with the total count."""
    where = Project.id.in_(access.visible_projects(user))
    total = session.scalar(select(func.count()).select_from(Project).where(where)) or 0
    rows = session.scalars(
        select(Project)
        .where(where)
        .order_by(Project.created_at.desc(), Project.id)
        .limit(limit)
        .offset(offset)
    ).all()
    return list(rows), total


def delete_project(session: Session, *, project: Project, actor: User, ip: str = "") -> list[str]:
    """Delete a project and its rows; refuses while one of its jobs is active.

    Returns the artifact folders (relative to the data folder) for the caller to remove once
    the deletion is committed. Dataset files are content-addressed and may be shared with other
    projects, so they stay.
    """
    active = session.scalar(
        select(func.count())
        .select_from(Job)
        .where(
            Job.project_id == project.id,
            Job.status.in_([JobStatus.validating_files, JobStatus.queued, JobStatus.running]),
        )
    )
    if active:
        raise Conflict("the project has jobs that are still queued or running: cancel them first")
    folders = [
        str(Path("artifacts") / str(job_id))
        for job_id in session.scalars(select(Job.id).where(Job.project_id == project.id))
    ]
    # Evaluations and jobs reference dataset versions without cascading, so they go first.
    evaluations = select(Evaluation.id).where(Evaluation.project_id == project.id)
    session.execute(delete(EvalSample).where(EvalSample.evaluation_id.in_(evaluations)))
    session.execute(delete(Evaluation).where(Evaluation.project_id == project.id))
    session.execute(delete(Job).where(Job.project_id == project.id))
    session.delete(project)
    audit.record(
        session,
        action="project.deleted",
        actor=actor,
        target=f"project {project.id}",
        ip=ip,
        details={"name": project.name},
    )
    session.flush()
    return folders


# The guided path: six steps from a goal to a model in use. Each has a title and one paragraph
# (what it is for, what a good choice looks like), translated where they are shown.
GUIDE: list[tuple[str, str, str]] = [
    (
        "goal",
        N_("Goal"),
        N_(
            "Say what the model should do and how you will know it works. A good goal names "
            'one task ("answer customer questions about our returns policy") and a '
            'criterion the evaluation can check, such as "rougeL improves on baseline by '
            '>= 0.05" or "token_f1 >= 0.6".'
        ),
    ),
    (
        "data",
        N_("Data"),
        N_(
            "Upload examples of the task done well: a question and the answer you want. A few "
            "hundred clean, varied examples beat thousands of noisy ones; keep enough aside "
            "for the test split (at least 50) so that the verdict means something."
        ),
    ),
    (
        "model",
        N_("Model and method"),
        N_(
            "Choose a base model and how to adapt it. Start small: a model that fits this "
            "machine and speaks your users' language, with LoRA and the quick preset. Try a "
            "larger model only when the small one is close but not good enough."
        ),
    ),
    (
        "train",
        N_("Train"),
        N_(
            "Training runs on a worker while you wait or do something else. Watch the "
            "training and validation loss: both should fall; when the validation loss rises "
            "again, the model starts to memorise and more steps do not help."
        ),
    ),
    (
        "check",
        N_("Check"),
        N_(
            "Compare the fine-tuned model with simply prompting the base model, on the test "
            "examples it never saw. The report says whether each success criterion is met; "
            "send the answers to people for blind review when numbers are not enough."
        ),
    ),
    (
        "use",
        N_("Use"),
        N_(
            "Deploy the model to try it in the playground and call it with an OpenAI-style "
            "API, or export it to run elsewhere. Keep the evaluation report with it: it says "
            "what the model is good for."
        ),
    ),
]


@dataclass(frozen=True)
class GuideStep:
    key: str
    title: str  # message ids: translate where shown
    explanation: str
    done: bool
    current: bool
    href: str  # where the step's action is


def guide(session: Session, *, project: Project) -> list[GuideStep]:
    """The guided path through ``project``, from its real state: the first step not done yet
    is the current one."""

    def exists(query: Select[Any]) -> bool:
        return session.scalar(select(query.exists())) or False

    pid = project.id
    jobs = select(Job.id).where(Job.project_id == pid)
    latest_job = session.scalar(
        select(Job.id).where(Job.project_id == pid).order_by(Job.created_at.desc()).limit(1)
    )
    done = {
        "goal": bool(project.task_description.strip() or project.success_criteria),
        "data": exists(select(Dataset.id).where(Dataset.project_id == pid)),
        "model": latest_job is not None,
        "train": exists(jobs.where(Job.status == JobStatus.succeeded)),
        "check": exists(
            select(Evaluation.id).where(
                Evaluation.project_id == pid, Evaluation.status == EvalStatus.succeeded
            )
        ),
        "use": exists(select(Deployment.id).where(Deployment.project_id == pid))
        or exists(select(Export.id).where(Export.job_id.in_(jobs))),
    }
    base = f"/projects/{pid}"
    href = {
        "goal": f"{base}#goal",
        "data": f"{base}#datasets",
        "model": f"{base}#jobs",
        "train": f"/jobs/{latest_job}" if latest_job else f"{base}#jobs",
        "check": f"{base}/report",
        "use": f"{base}/deployments",
    }
    current = next((key for key, _, _ in GUIDE if not done[key]), None)
    return [
        GuideStep(
            key=key,
            title=title,
            explanation=text,
            done=done[key],
            current=key == current,
            href=href[key],
        )
        for key, title, text in GUIDE
    ]


def guide_before_any_project() -> list[GuideStep]:
    """The guided path of a user with no project yet: the goal comes first, on the new
    project form."""
    return [
        GuideStep(
            key=key,
            title=title,
            explanation=text,
            done=False,
            current=key == "goal",
            href="/projects#new" if key == "goal" else "",
        )
        for key, title, text in GUIDE
    ]
