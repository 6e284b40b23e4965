"""Celery task that trains one job: claim the row, run the engine, record what it reports."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import threading
import uuid
from pathlib import Path
from typing import Any

from celery.signals import worker_ready, worker_shutting_down

from app.core.config import Settings, get_settings
from app.core.db import session_scope
from app.models import Evaluation, Job, JobStatus
from app.services import datasets as datasets_service
from app.services import evaluations as evaluations_service
from app.services import jobs as jobs_service
from app.services.base_models import check_on_worker
from app.services.queue import enqueue_training
from worker.celery_app import TRAIN_JOB, celery_app
from worker.tasks import crashed
from worker.training import (
    StepMetrics,
    TrainingCancelled,
    TrainingError,
    TrainResult,
    train,
)
from worker.training.checkpoints import IncompatibleCheckpoint, latest_checkpoint
from worker.training.config import TrainConfig
from worker.training.model_names import for_remote_user

log = logging.getLogger(__name__)

# Set when this worker process is asked to stop: the running job stops at its next step and is
# handed back to the queue at once, instead of waiting for its lease to expire.
SHUTTING_DOWN = threading.Event()


@worker_shutting_down.connect
def _on_shutdown(**_: Any) -> None:
    SHUTTING_DOWN.set()


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class JobReporter:
    """The engine's callbacks, writing to the job row; a thread keeps the lease alive.

    The training loop blocks the main thread for long stretches (loading a model, one slow
    step), so heartbeats and the cancel check run on their own thread and the loop only reads
    a flag.
    """

    def __init__(self, job_id: uuid.UUID, worker: str, settings: Settings) -> None:
        self.job_id = job_id
        self.worker = worker
        self.settings = settings
        self._stop = threading.Event()
        self._done = threading.Event()
        self.lease_lost = False
        self.cancel_requested = False
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{job_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._done.set()
        self._thread.join(timeout=10)

    def _beat(self) -> None:
        # Cancellation is checked every second so a cancelled job stops within seconds; the
        # heartbeat itself is written at the configured (slower) pace.
        since_beat = self.settings.heartbeat_seconds
        while not self._done.wait(1.0):
            since_beat += 1.0
            try:
                with session_scope() as session:
                    if since_beat >= self.settings.heartbeat_seconds:
                        ours, cancel = jobs_service.heartbeat(
                            session, job_id=self.job_id, worker=self.worker
                        )
                        since_beat = 0.0
                        if not ours:
                            self.lease_lost = True
                    else:
                        cancel = jobs_service.cancel_requested(session, job_id=self.job_id)
                if cancel:
                    self.cancel_requested = True
                if cancel or self.lease_lost:
                    self._stop.set()
            except Exception:  # the database may blink; the next beat tries again
                log.exception("heartbeat for job %s failed", self.job_id)

    # TrainCallbacks -------------------------------------------------------------------------
    def on_event(self, level: str, message: str, data: dict[str, Any] | None = None) -> None:
        with session_scope() as session:
            jobs_service.add_event(
                session, job_id=self.job_id, level=level, message=message, data=data
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
        with session_scope() as session:
            held = jobs_service.record_step(
                session,
                job_id=self.job_id,
                worker=self.worker,
                step=metrics.step,
                total_steps=metrics.total_steps,
                values=values,
            )
        if not held:  # re-queued to another worker meanwhile: stop before the next step
            self.lease_lost = True
            self._stop.set()

    def should_stop(self) -> bool:
        return self._stop.is_set() or SHUTTING_DOWN.is_set()


def _load_records(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def checkpoint_dir(settings: Settings, job_id: uuid.UUID | str) -> Path:
    """Where a job's checkpoints live: shared by its attempts, so a re-queued job resumes
    from the newest one whichever worker picks it up."""
    return settings.runs_dir / str(job_id) / "checkpoints"


def _dir_size(path: Path) -> tuple[int, list[str]]:
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return sum(p.stat().st_size for p in files), [str(p.relative_to(path)) for p in files]


@celery_app.task(name=TRAIN_JOB)
def train_job(job_id: str) -> str:
    """Run one training job. Idempotent: a job that is not queued is left alone."""
    settings = get_settings()
    settings.ensure_dirs()
    jid = uuid.UUID(job_id)
    me = worker_name()
    with session_scope() as session:
        job = jobs_service.claim_job(session, job_id=jid, worker=me)
        if job is None:
            return "skipped"
        config = TrainConfig.model_validate(job.config)
        version = jobs_service.job_dataset_version(session, job=job)
        records_path = settings.data_dir / version.records_path
        validation_path = datasets_service.split_files(settings, version).get("validation")
        attempt = job.attempts

    reporter = JobReporter(jid, me, settings)
    reporter.start()
    # One folder per attempt, so a worker that lost its lease and a new one never share files.
    out_dir = settings.artifacts_dir / job_id / f"attempt-{attempt}" / "adapter"
    checkpoints = checkpoint_dir(settings, job_id)
    # A job handed back or re-queued after its worker died carries on from its newest
    # checkpoint; the steps it repeats overwrite their metric points (see record_step).
    resume_from = latest_checkpoint(checkpoints)
    status, error = JobStatus.failed, None
    result: TrainResult | None = None
    try:
        # A job made before base models were checked at creation could name any path.
        check_on_worker(config.base_model, settings)
        records = _load_records(records_path)
        validation = (
            _load_records(validation_path)
            if validation_path is not None and validation_path.is_file()
            else []
        )

        def run(resume: Path | None) -> TrainResult:
            return train(
                config,
                records=records,
                output_dir=out_dir,
                model_cache_dir=settings.model_cache_dir,
                callbacks=reporter,
                allow_downloads=settings.allow_hub_downloads,
                validation_records=validation,
                checkpoint_dir=checkpoints,
                resume_from=resume,
            )

        try:
            result = run(resume_from)
        except IncompatibleCheckpoint as exc:
            # A checkpoint that cannot be used must not fail the job: train from the start.
            reporter.on_event("warning", f"{exc} Training starts over.")
            shutil.rmtree(checkpoints, ignore_errors=True)
            result = run(None)
        status = JobStatus.succeeded
    except TrainingCancelled:
        status = JobStatus.cancelled
    except TrainingError as exc:
        error = for_remote_user(exc)
    except Exception as exc:
        error = crashed(f"job {job_id}", exc)
    finally:
        reporter.close()

    if status == JobStatus.cancelled and SHUTTING_DOWN.is_set() and not reporter.cancel_requested:
        # Stopped because this worker is stopping, not because anyone cancelled the job.
        shutil.rmtree(out_dir.parent, ignore_errors=True)
        _hand_back(jid, me)
        return "handed back"
    if reporter.lease_lost:
        # Another worker owns the job now; what this one produced is not recorded.
        shutil.rmtree(out_dir.parent, ignore_errors=True)
        return "lease lost"

    with session_scope() as session:
        summary: dict[str, Any] | None = None
        if status == JobStatus.succeeded and result is not None:
            size, files = _dir_size(result.adapter_dir)
            artifact = jobs_service.store_artifact(
                session,
                job_id=jid,
                kind="adapter",
                path=str(result.adapter_dir.relative_to(settings.data_dir)),
                size_bytes=size,
                files=files,
            )
            summary = {
                "steps": result.steps,
                "final_loss": result.final_loss,
                "train_seconds": round(result.train_seconds, 2),
                "tokens": result.tokens,
                "artifact_id": str(artifact.id),
            }
            if result.best_step is not None:
                summary.update(
                    best_step=result.best_step,
                    best_val_loss=result.best_val_loss,
                    stopped_early=result.stopped_early,
                )
        ended = jobs_service.finish_job(
            session, job_id=jid, worker=me, status=status, error=error, result=summary
        )
        evaluation_id = None
        if not ended:
            session.rollback()
        elif status == JobStatus.succeeded:
            # Measured at once against the prompting baseline on the held-out test split.
            job_row = session.get(Job, jid)
            created = (
                evaluations_service.evaluation_after_job(session, settings=settings, job=job_row)
                if job_row is not None
                else None
            )
            evaluation_id = created.id if created is not None else None
    if evaluation_id is not None:
        with session_scope() as session:
            evaluation = session.get(Evaluation, evaluation_id)
            if evaluation is not None:
                evaluations_service.enqueue_or_fail(session, evaluation=evaluation)
    if status != JobStatus.succeeded or not ended:
        shutil.rmtree(out_dir.parent, ignore_errors=True)
    if ended and status != JobStatus.succeeded:
        # Nothing resumes a failed or cancelled job; a succeeded one keeps its last K
        # checkpoints (the final one included) beside its artifact.
        shutil.rmtree(checkpoints, ignore_errors=True)
        with contextlib.suppress(OSError):
            checkpoints.parent.rmdir()  # the job's run folder, if nothing else is in it
    return str(status)


def _hand_back(job_id: uuid.UUID, worker: str) -> None:
    with session_scope() as session:
        queue = jobs_service.release_job(session, job_id=job_id, worker=worker)
    if queue is not None:
        enqueue_training(job_id=job_id, queue=queue)


def requeue_stale_jobs() -> int:
    """Hand jobs of dead workers back to the queue (called periodically by every worker)."""
    settings = get_settings()
    with session_scope() as session:
        stale = jobs_service.reap_stale_jobs(session, lease_seconds=settings.lease_seconds)
    for jid, queue in stale:
        enqueue_training(job_id=jid, queue=queue)
    from app.services.deployments import mark_lost
    from worker.tasks.evaluation import requeue_stale_evaluations

    with session_scope() as session:
        mark_lost(session, lease_seconds=settings.lease_seconds)
    return len(stale) + requeue_stale_evaluations()


def _reap_forever(stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        try:
            requeue_stale_jobs()
        except Exception:
            log.exception("reaping stale jobs failed")


@worker_ready.connect
def _start_reaper(**_: Any) -> None:
    # Every worker reaps; the conditional UPDATE lets exactly one of them re-queue a given job.
    settings = get_settings()
    try:
        requeue_stale_jobs()
    except Exception:
        log.exception("reaping stale jobs failed")
    interval = max(1.0, settings.lease_seconds / 4)
    threading.Thread(
        target=_reap_forever, args=(threading.Event(), interval), name="reaper", daemon=True
    ).start()
