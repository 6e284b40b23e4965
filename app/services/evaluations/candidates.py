"""Candidate models: a prompted base model, a finished job, or one of its checkpoints."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.errors import FieldError, InvalidInput, NotFound
from app.models import Job, JobStatus, ModelPermission, Project
from app.schemas.evaluation import CandidateIn
from app.services.jobs import checkpoints_dir
from worker.spec.catalog import catalog_entry
from worker.spec.methods import METHODS

BASELINE_KEY = "baseline"
CHECKPOINT_NAME = re.compile(r"^checkpoint-\d+$")


def finished_job(session: Session, project: Project, job_id: uuid.UUID, *, field: str) -> Job:
    job = session.get(Job, job_id)
    if job is None or job.project_id != project.id:
        raise NotFound("job not found in this project")
    if job.status != JobStatus.succeeded:
        message = f"job {str(job.id)[:8]} has {job.status}; only a succeeded job has a model"
        raise InvalidInput.on(field, message, detail=message)
    return job


def _permissions(session: Session, base_model: str) -> dict[str, bool]:
    permission = session.scalar(select(ModelPermission).where(ModelPermission.model == base_model))
    return {
        "trust_remote_code": bool(permission and permission.trust_remote_code),
        "allow_pickle_weights": bool(permission and permission.allow_pickle_weights),
    }


def base_candidate(
    session: Session,
    project: Project,
    *,
    key: str,
    base_model: str,
    k_shot: int,
    system_prompt: str | None = None,
    label: str | None = None,
) -> dict[str, Any]:
    shots = f", {k_shot}-shot" if k_shot else ", zero-shot"
    prompt = project.system_prompt if system_prompt is None else system_prompt
    return {
        "key": key,
        "label": label or f"Base model + prompt ({_model_title(base_model)}{shots})",
        "kind": "base",
        "base_model": base_model,
        "job_id": None,
        "checkpoint": None,
        "method": None,
        "k_shot": k_shot,
        "system_prompt": prompt,
        **_permissions(session, base_model),
    }


def job_candidate(
    session: Session, job: Job, *, label: str | None = None, k_shot: int = 0
) -> dict[str, Any]:
    method = str(job.config.get("method", "lora"))
    return {
        "key": f"job-{str(job.id)[:8]}",
        "label": label or f"Fine-tuned ({method_title(method)}, job {str(job.id)[:8]})",
        "kind": "job",
        "base_model": job.config["base_model"],
        "job_id": str(job.id),
        "checkpoint": None,
        "method": method,
        "k_shot": k_shot,
        "system_prompt": job.config.get("system_prompt"),
        **_permissions(session, str(job.config["base_model"])),
    }


def candidate(
    session: Session,
    settings: Settings,
    project: Project,
    model: CandidateIn,
    index: int,
    earlier: list[dict[str, Any]],
) -> dict[str, Any]:
    field = f"models.{index}"
    if model.kind == "base":
        if not model.base_model:
            raise InvalidInput(
                f"{field}.base_model: name the base model",
                errors=[FieldError(field=f"{field}.base_model", message="name the base model")],
            )
        return base_candidate(
            session,
            project,
            key=f"base-{index + 1}",
            base_model=model.base_model,
            k_shot=model.k_shot,
            system_prompt=model.system_prompt,
            label=model.label,
        )
    if model.job_id is None:
        raise InvalidInput(
            f"{field}.job_id: name the job",
            errors=[FieldError(field=f"{field}.job_id", message=f"a {model.kind} needs job_id")],
        )
    job = session.get(Job, model.job_id)
    if job is None or job.project_id != project.id:
        raise NotFound("job not found in this project")
    if model.kind == "job":
        job = finished_job(session, project, model.job_id, field=f"{field}.job_id")
        chosen = job_candidate(session, job, label=model.label, k_shot=model.k_shot)
        if model.system_prompt is not None:
            chosen["system_prompt"] = model.system_prompt
        return chosen
    name = model.checkpoint or ""
    folder = checkpoint_folder(settings, job.id, name)
    if not CHECKPOINT_NAME.match(name) or not folder.is_dir():
        have = ", ".join(p.name for p in list_checkpoints(settings, job.id)) or "none"
        message = f"job {str(job.id)[:8]} has no checkpoint {name!r} (it has: {have})"
        raise InvalidInput.on(f"{field}.checkpoint", message, detail=message)
    step = name.removeprefix("checkpoint-")
    return {
        "key": f"ckpt-{str(job.id)[:8]}-{step}",
        "label": model.label or f"Checkpoint {step} of job {str(job.id)[:8]}",
        "kind": "checkpoint",
        "base_model": job.config["base_model"],
        "job_id": str(job.id),
        "checkpoint": name,
        "method": job.config.get("method"),
        "k_shot": model.k_shot,
        "system_prompt": (
            model.system_prompt
            if model.system_prompt is not None
            else job.config.get("system_prompt")
        ),
        **_permissions(session, str(job.config["base_model"])),
    }


def checkpoint_folder(settings: Settings, job_id: uuid.UUID, name: str) -> Path:
    return checkpoints_dir(settings, job_id) / name


def list_checkpoints(settings: Settings, job_id: uuid.UUID) -> list[Path]:
    """A job's finished checkpoints, oldest first (staging folders start with a dot)."""
    folder = checkpoints_dir(settings, job_id)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and CHECKPOINT_NAME.match(p.name)]
    return sorted(found, key=lambda p: int(p.name.removeprefix("checkpoint-")))


def _model_title(name: str) -> str:
    entry = catalog_entry(name)
    return entry.title if entry is not None else Path(name).name or name


def method_title(method: str) -> str:
    info = METHODS.get(method)
    return info.title if info is not None else method
