"""Candidate models: a prompted base model, a finished job, or one of its checkpoints."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.errors import FieldError, InvalidInput, NotFound
from app.core.i18n import N_, _
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
    prompt = project.system_prompt if system_prompt is None else system_prompt
    chosen: dict[str, Any] = {
        "key": key,
        "label": label,
        "kind": "base",
        "base_model": base_model,
        "job_id": None,
        "checkpoint": None,
        "method": None,
        "k_shot": k_shot,
        "system_prompt": prompt,
        **_permissions(session, base_model),
    }
    chosen["label"] = label or default_label(chosen)
    return chosen


def job_candidate(
    session: Session, job: Job, *, label: str | None = None, k_shot: int = 0
) -> dict[str, Any]:
    method = str(job.config.get("method", "lora"))
    chosen: dict[str, Any] = {
        "key": f"job-{str(job.id)[:8]}",
        "label": label,
        "kind": "job",
        "base_model": job.config["base_model"],
        "job_id": str(job.id),
        "checkpoint": None,
        "method": method,
        "k_shot": k_shot,
        "system_prompt": job.config.get("system_prompt"),
        **_permissions(session, str(job.config["base_model"])),
    }
    chosen["label"] = label or default_label(chosen)
    return chosen


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
    checkpoint: dict[str, Any] = {
        "key": f"ckpt-{str(job.id)[:8]}-{step}",
        "label": model.label,
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
    checkpoint["label"] = model.label or default_label(checkpoint)
    return checkpoint


# --- Labels ---------------------------------------------------------------------------------
# A candidate's label is stored in English (the API and the CLI read it as it is); pages show a
# default one, rebuilt from the candidate's own fields, in the reader's language.
BASE_K_SHOT = N_("Base model + prompt (%(model)s, %(k)s-shot)")
BASE_ZERO_SHOT = N_("Base model + prompt (%(model)s, zero-shot)")
FINE_TUNED = N_("Fine-tuned (%(method)s, job %(job)s)")
CHECKPOINT = N_("Checkpoint %(step)s of job %(job)s")


def _label_parts(candidate: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The default label's pattern (English) and its values, or None for an unknown kind."""
    kind = candidate.get("kind")
    job = str(candidate.get("job_id") or "")[:8]
    if kind == "base":
        k_shot = int(candidate.get("k_shot") or 0)
        model = _model_title(str(candidate.get("base_model") or ""))
        if k_shot:
            return BASE_K_SHOT, {"model": model, "k": k_shot}
        return BASE_ZERO_SHOT, {"model": model}
    if kind == "job":
        method = method_title(str(candidate.get("method") or "lora"))
        return FINE_TUNED, {"method": method, "job": job}
    if kind == "checkpoint":
        step = str(candidate.get("checkpoint") or "").removeprefix("checkpoint-")
        return CHECKPOINT, {"step": step, "job": job}
    return None


def default_label(candidate: Mapping[str, Any]) -> str:
    """The label a candidate gets when none is given, in English (as stored)."""
    parts = _label_parts(candidate)
    if parts is None:
        return str(candidate.get("key") or "")
    pattern, values = parts
    return pattern % values


def shown_label(candidate: Mapping[str, Any]) -> str:
    """A candidate's label for a person: a default one in the reader's language, one that
    someone chose as it was written."""
    stored = str(candidate.get("label") or "")
    parts = _label_parts(candidate)
    if parts is None or stored != default_label(candidate):
        return stored or str(candidate.get("key") or "")
    pattern, values = parts
    if "method" in values:
        values = {**values, "method": _(values["method"])}  # method titles are in the catalog
    return _(pattern, **values)


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
