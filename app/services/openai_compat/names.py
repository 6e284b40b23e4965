"""The ids and names OpenAI's API uses, over tunelab's rows.

- a file: ``file-<32 hex>`` (the ``openai_files`` row's id); a job's results file:
  ``file-results-<32 hex>`` (the job's id; made when it is read);
- a job: ``ftjob-<32 hex>`` (the tunelab job's id); its events ``ftevent-<n>``, its
  checkpoints ``ftckpt-<32 hex>-<step>``;
- the fine-tuned model: ``ft:<base>:<owner>:<suffix>:<id>`` and a checkpoint's
  ``ft:<base>:<owner>:<suffix>:<id>:ckpt-step-<step>``, as OpenAI spells them.
"""

from __future__ import annotations

import re
import uuid
from pathlib import PurePath

from app.services.openai_compat.errors import OpenAIError

FILE, RESULTS, JOB, EVENT, CHECKPOINT = "file-", "file-results-", "ftjob-", "ftevent-", "ftckpt-"
CHECKPOINT_SUFFIX = re.compile(r"^(?P<model>ft:.+):ckpt-step-(?P<step>\d+)$")
_UNSAFE = re.compile(r"[^a-z0-9_-]+")


def file_id(row_id: uuid.UUID) -> str:
    return FILE + row_id.hex


def results_file_id(job_id: uuid.UUID) -> str:
    return RESULTS + job_id.hex


def job_id(row_id: uuid.UUID) -> str:
    return JOB + row_id.hex


def checkpoint_id(job: uuid.UUID, step: int) -> str:
    return f"{CHECKPOINT}{job.hex}-{step}"


def parse(value: str, prefix: str, *, what: str, param: str | None = None) -> uuid.UUID:
    """The row id in ``value``; a 404 naming ``what`` when it is not one of ours."""
    if value.startswith(prefix):
        try:
            return uuid.UUID(hex=value[len(prefix) :])
        except ValueError:
            pass
    raise OpenAIError(404, f"No such {what}: {value!r}", param=param, code="not_found")


def parse_file(value: str, *, param: str | None = None) -> uuid.UUID:
    if value.startswith(RESULTS):
        raise OpenAIError(
            400, f"{value!r} is a job's results, not training data", param=param, code="invalid"
        )
    return parse(value, FILE, what="file", param=param)


def owner_name(email: str) -> str:
    """The ``<owner>`` of a model name: the part of the e-mail before the @, made safe."""
    local = email.split("@", 1)[0].lower()
    return _UNSAFE.sub("-", local).strip("-")[:40] or "user"


def base_name(model: str) -> str:
    """The ``<base>`` of a model name: the model as named (a local path by its folder's name);
    never a colon, which separates the parts."""
    name = PurePath(model).name if model.startswith("/") else model
    return name.replace(":", "-")


def fine_tuned_model(*, base: str, owner: str, suffix: str | None, job: uuid.UUID) -> str:
    return f"ft:{base_name(base)}:{owner}:{suffix or ''}:{job.hex[:12]}"


def checkpoint_model(model: str, step: int) -> str:
    return f"{model}:ckpt-step-{step}"
