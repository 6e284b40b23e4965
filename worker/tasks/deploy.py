"""Celery tasks of the deploy step: making an export (merging runs on the worker's GPU)."""

from __future__ import annotations

import logging
import time
import traceback
import uuid
from typing import Any

from sqlalchemy import update

from app.core.config import get_settings
from app.core.db import session_scope
from app.models import Deployment, Export, Job
from app.services import deployments, leases
from app.services import exports as service
from app.services import jobs as jobs_service
from worker.celery_app import MAKE_EXPORT, SERVE_DEPLOYMENT, celery_app
from worker.deploy.export import (
    ExportError,
    discard_earlier_attempts,
    discard_export,
    export_adapter,
    export_merged,
)
from worker.deploy.from_checkpoint import save_trained_model
from worker.tasks import crashed
from worker.tasks.runtime import Lease
from worker.training import TrainingCancelled, TrainingError

log = logging.getLogger(__name__)


def _say(lease: Lease, model: type[Export] | type[Deployment], progress: dict[str, Any]) -> None:
    """Store what the worker is doing now on the row it holds (the page polls it)."""
    lease.write(
        lambda session: session.execute(
            update(model).where(model.id == lease.item_id).values(progress=progress)
        )
    )


@celery_app.task(name=MAKE_EXPORT)
def make_export(export_id: str) -> str:
    """Write one export under the data folder. Idempotent: one not queued is left alone."""
    settings = get_settings()
    lease = Lease(leases.EXPORT, uuid.UUID(export_id))
    with session_scope() as session:
        export = lease.claim(session)
        if export is None:
            return "skipped"
        job = session.get(Job, export.job_id)
        artifact = jobs_service.model_artifact(session, job_id=export.job_id)
        # A stopped job has no model artifact: its newest checkpoint becomes one first.
        checkpoint = (
            jobs_service.newest_checkpoint(settings, export.job_id)
            if job is not None and artifact is None and job.status in jobs_service.STOPPED
            else None
        )
        if job is None or (artifact is None and checkpoint is None):
            gone = True
        else:
            gone = False
            card = service.card_data(session, job=job)
            prompts = service.check_prompts(session, job=job)
            kind, dtype, attempt = export.kind, export.dtype, export.attempts
            base_model = str(job.config["base_model"])
            train_config = dict(job.config)
            trust = bool(job.config.get("trust_remote_code"))
            job_id = job.id
            if artifact is not None:
                adapter_dir = settings.data_dir / artifact.path
            else:
                adapter_dir = (
                    settings.artifacts_dir / str(job_id) / "exports" / f"trained-{export_id[:8]}"
                )
                card["name"] += f" ({checkpoint.name if checkpoint else ''}, stopped early)"
    if gone:
        lease.finish("failed", error="the model is gone")
        return "failed"
    # A folder per attempt: a worker that lost this export to another never writes where
    # the new one does. Only the attempt that finishes under its lease is ever reported.
    out_dir = settings.artifacts_dir / str(job_id) / "exports" / f"{kind}-{export_id[:8]}-{attempt}"
    discard_earlier_attempts(out_dir)
    started = time.perf_counter()
    status, error, values = "failed", None, {}
    with lease:
        try:
            if checkpoint is not None:
                _say(lease, Export, {"phase": "checkpoint", "checkpoint": checkpoint.name})
                save_trained_model(
                    checkpoint,
                    train_config,
                    adapter_dir,
                    model_cache_dir=settings.model_cache_dir,
                    allow_downloads=settings.allow_hub_downloads,
                    should_stop=lease.should_stop,
                )
            _say(lease, Export, {"phase": "merging" if kind == "merged" else "packing"})
            if kind == "merged":
                result = export_merged(
                    base_model,
                    adapter_dir,
                    out_dir,
                    model_cache_dir=settings.model_cache_dir,
                    card=card,
                    dtype=dtype,
                    prompts=prompts,
                    allow_downloads=settings.allow_hub_downloads,
                    trust_remote_code=trust,
                    should_stop=lease.should_stop,
                )
            else:
                result = export_adapter(adapter_dir, out_dir, card=card)
            status = "succeeded"
            values = {
                "path": str(result.folder.relative_to(settings.data_dir)),
                "archive_path": str(result.archive.relative_to(settings.data_dir)),
                "size_bytes": result.archive.stat().st_size,
                "files": result.files,
                "verification": result.verification,
                "note": result.note,
            }
        except TrainingCancelled:
            status = "cancelled"
        except (ExportError, TrainingError) as exc:
            error = str(exc)
        except Exception as exc:
            error = crashed(f"export {export_id}", exc)
    values["seconds"] = round(time.perf_counter() - started, 2)
    values["progress"] = {}
    if status != "succeeded" or lease.ended_elsewhere:
        discard_export(out_dir)
    if (stopped := lease.give_up_or_hand_back()) is not None:
        return stopped
    if not lease.finish(status, error=error, values=values):
        discard_export(out_dir)
        return "lease lost"
    return status


@celery_app.task(name=SERVE_DEPLOYMENT)
def serve_deployment(deployment_id: str) -> str:
    """Serve one deployment until it is stopped: the model server runs in this worker, on a
    port of its own; tunelab's web process forwards requests to it."""
    import socket
    import threading

    import uvicorn

    from worker.serving.engine import ServingEngine
    from worker.serving.openai_app import make_app

    settings = get_settings()
    lease = Lease(leases.DEPLOYMENT, uuid.UUID(deployment_id))
    with session_scope() as session:
        deployment = lease.claim(session)
        if deployment is None:
            return "skipped"
        name, base_model, api_key = deployment.name, deployment.base_model, deployment.api_key
        adapters = {
            f"{name}/{a['name']}": settings.data_dir / a["path"] for a in deployment.adapters
        }

    error = None
    server = None
    thread = None
    engine = None
    # The lease's heartbeat keeps the row alive while a large model loads (longer than the
    # lease), and a deployment stopped meanwhile is noticed as soon as the load ends.
    with lease:
        try:
            _say(lease, Deployment, {"phase": "loading", "adapters": len(adapters)})
            engine = ServingEngine(
                base_model,
                adapters,
                model_cache_dir=settings.model_cache_dir,
                served_name=f"{name}/base",
                allow_downloads=settings.allow_hub_downloads,
            )
            _say(lease, Deployment, {"phase": "starting server"})
            with socket.socket() as probe:
                probe.bind((settings.serve_host, 0))
                port = int(probe.getsockname()[1])
            server = uvicorn.Server(
                uvicorn.Config(
                    make_app(engine, api_key=api_key),
                    host=settings.serve_host,
                    port=port,
                    log_level="warning",
                    lifespan="off",
                )
            )
            thread = threading.Thread(target=server.run, name=f"serve-{name}", daemon=True)
            thread.start()
            deadline = time.monotonic() + 60
            while not server.started:
                if not thread.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError("the model server did not start")
                time.sleep(0.05)
            host = settings.serve_advertise_host or settings.serve_host
            url = f"http://{host}:{port}"
            lease.write(lambda session: deployments.mark_running(session, lease.item_id, url=url))
            while not lease.should_stop():
                time.sleep(0.5)
        except TrainingCancelled:
            pass  # stopped (or lost) while loading
        except Exception as exc:
            log.error("deployment %s failed:\n%s", deployment_id, traceback.format_exc())
            error = (
                str(exc)
                if isinstance(exc, TrainingError | ValueError)
                else (f"the model server failed ({type(exc).__name__}: {exc})")
            )
        finally:
            if server is not None:
                server.should_exit = True
            if thread is not None:
                thread.join(timeout=30)
            if engine is not None:
                engine.close()
    if error is None and (stopped := lease.give_up_or_hand_back()) is not None:
        # Handed back: served again when a worker is back (embedded: when tunelab restarts).
        return stopped
    lease.finish("failed" if error else "stopped", error=error, values={"url": None})
    return "failed" if error else "stopped"
