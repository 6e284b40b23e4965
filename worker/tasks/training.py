"""Celery task that trains one job: claim the row, run the engine, record what it reports.

Every write the engine's callbacks make goes through the job's lease: a worker that lost the
job to another one (it froze past its lease) stops at its next step and writes nothing more.
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from pathlib import Path
from typing import Any

from app.core.config import get_settings
from app.core.db import session_scope
from app.models import JobStatus
from app.services import jobs as jobs_service
from app.services import leases
from app.services.jobs.base_models import check_on_worker
from app.services.queue import offer
from worker.celery_app import TRAIN_JOB, celery_app
from worker.spec.config import TrainConfig
from worker.spec.model_names import for_remote_user
from worker.tasks import crashed
from worker.tasks.runtime import Lease
from worker.training import (
    StepMetrics,
    TrainingCancelled,
    TrainingError,
    TrainResult,
    distributed,
)
from worker.training.checkpoints import IncompatibleCheckpoint, latest_checkpoint

log = logging.getLogger(__name__)


class JobReporter:
    """The engine's callbacks: events and step metrics written under the job's lease."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease

    def on_event(self, level: str, message: str, data: dict[str, Any] | None = None) -> None:
        self.lease.write(
            lambda session: jobs_service.add_event(
                session, job_id=self.lease.item_id, level=level, message=message, data=data
            )
        )

    def on_step(self, metrics: StepMetrics) -> None:
        values = {
            "loss": metrics.loss,
            "learning_rate": metrics.learning_rate,
            "grad_norm": metrics.grad_norm,
            "tokens_per_second": metrics.tokens_per_second,
            "epoch": metrics.epoch,
            "eta_seconds": metrics.eta_seconds,
        }
        if metrics.gpu_memory_bytes is not None:
            values["gpu_memory_bytes"] = float(metrics.gpu_memory_bytes)
        if metrics.val_loss is not None:
            values["val_loss"] = metrics.val_loss
        self.lease.write(
            lambda session: jobs_service.record_step(
                session,
                job_id=self.lease.item_id,
                step=metrics.step,
                total_steps=metrics.total_steps,
                values=values,
            )
        )

    def checkpoint_on_stop(self) -> bool:
        """Stopped because someone cancelled the job (not lost to another worker, nor handed
        back by a worker shutting down): keep what was trained."""
        return self.lease.cancel_requested and not self.lease.lost

    def should_stop(self) -> bool:
        # The lease's thread notices a cancel within a second; a tiny model takes many steps
        # in a second, so the row is read here too (one primary-key lookup, before each step):
        # a cancel stops the run before the step after the one in flight.
        if self.lease.should_stop():
            return True
        try:
            with session_scope() as session:
                asked = leases.cancel_asked(session, leases.JOB, self.lease.item_id)
        except Exception:  # a database blip must not end the run: the lease's thread retries
            log.warning("could not read whether job %s was cancelled", self.lease.item_id)
            return False
        if asked:
            self.lease.cancel_requested = True
        return asked


def _load_records(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@celery_app.task(name=TRAIN_JOB)
def train_job(job_id: str) -> str:
    """Run one training job. Idempotent: a job that is not queued is left alone."""
    settings = get_settings()
    settings.ensure_dirs()
    lease = Lease(leases.JOB, uuid.UUID(job_id))
    with session_scope() as session:
        job = lease.claim(session)
        if job is None:
            return "skipped"
        plan = jobs_service.training_plan(session, settings=settings, job=job)
    config = TrainConfig.model_validate(plan.config)
    # A job handed back or re-queued after its worker died carries on from its newest
    # checkpoint; the steps it repeats overwrite their metric points (see record_step).
    resume_from = latest_checkpoint(plan.checkpoints)
    status, error, result = JobStatus.failed, None, None
    with lease:
        try:
            # A job made before base models were checked at creation could name any path.
            check_on_worker(config.base_model, settings)
            records = _load_records(plan.records)
            validation = _load_records(plan.validation) if plan.validation else []

            def run(resume: Path | None) -> TrainResult:
                # On every GPU the job may use: several in torchrun's processes (DDP).
                return distributed.train(
                    config,
                    records=records,
                    output_dir=plan.output,
                    model_cache_dir=settings.model_cache_dir,
                    callbacks=JobReporter(lease),
                    allow_downloads=settings.allow_hub_downloads,
                    validation_records=validation,
                    checkpoint_dir=plan.checkpoints,
                    resume_from=resume,
                )

            try:
                result = run(resume_from)
            except IncompatibleCheckpoint as exc:
                # An unusable checkpoint must not fail the job: train from the start.
                JobReporter(lease).on_event("warning", f"{exc} Training starts over.")
                shutil.rmtree(plan.checkpoints, ignore_errors=True)
                result = run(None)
            status = JobStatus.succeeded
        except TrainingCancelled:
            status = JobStatus.cancelled
        except TrainingError as exc:
            error = for_remote_user(exc)
        except Exception as exc:
            error = crashed(f"job {lease.item_id}", exc)

    if lease.ended_elsewhere or status != JobStatus.succeeded:
        # This attempt's output is never used: another worker owns the job now, it goes
        # back to the queue (and resumes from its checkpoints), or it ended without a model.
        # The checkpoints stay, so what was trained can be resumed or exported.
        shutil.rmtree(plan.output.parent, ignore_errors=True)
    if (stopped := lease.give_up_or_hand_back()) is not None:
        return stopped
    evaluation = []

    def record(session: Any) -> None:
        if result is not None:
            made = jobs_service.record_success(
                session, settings=settings, job_id=lease.item_id, result=result
            )
            evaluation.extend([made] if made is not None else [])

    ended = lease.finish(
        status,
        error=error,
        message=jobs_service.outcome_message(status, error),
        level="error" if status == JobStatus.failed else "info",
        then=record,
    )
    if not ended:
        shutil.rmtree(plan.output.parent, ignore_errors=True)
        return "lease lost"
    for made in evaluation:  # measured at once against the prompting baseline
        with session_scope() as session:
            offer(session, leases.EVALUATION, made.id, made.queue)
    return str(status)
