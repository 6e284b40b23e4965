"""Celery tasks of the deploy step: making an export (merging runs on the worker's GPU)."""

from __future__ import annotations

import logging
import shutil
import time
import traceback
import uuid

from app.core.config import get_settings
from app.core.db import session_scope
from app.models import Job
from app.services import exports as service
from app.services import jobs as jobs_service
from worker.celery_app import MAKE_EXPORT, SERVE_DEPLOYMENT, celery_app
from worker.deploy.export import ExportError, export_adapter, export_merged
from worker.tasks import crashed
from worker.training import TrainingError

log = logging.getLogger(__name__)


@celery_app.task(name=MAKE_EXPORT)
def make_export(export_id: str) -> str:
    """Write one export under the data folder. Idempotent: one not queued is left alone."""
    settings = get_settings()
    xid = uuid.UUID(export_id)
    with session_scope() as session:
        export = service.claim(session, export_id=xid)
        if export is None:
            return "skipped"
        job = session.get(Job, export.job_id)
        artifact = jobs_service.model_artifact(session, job_id=export.job_id)
        if job is None or artifact is None:
            service.finish(
                session, export_id=xid, values={"status": "failed", "error": "the model is gone"}
            )
            return "failed"
        card = service.card_data(session, job=job)
        prompts = service.check_prompts(session, job=job)
        kind, dtype = export.kind, export.dtype
        base_model = str(job.config["base_model"])
        trust = bool(job.config.get("trust_remote_code"))
        adapter_dir = settings.data_dir / artifact.path
    out_dir = settings.artifacts_dir / str(job.id) / "exports" / f"{kind}-{str(xid)[:8]}"
    started = time.perf_counter()
    values: dict[str, object]
    try:
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
            )
        else:
            result = export_adapter(adapter_dir, out_dir, card=card)
        values = {
            "status": "succeeded",
            "path": str(result.folder.relative_to(settings.data_dir)),
            "archive_path": str(result.archive.relative_to(settings.data_dir)),
            "size_bytes": result.archive.stat().st_size,
            "files": result.files,
            "verification": result.verification,
            "note": result.note,
        }
    except (ExportError, TrainingError) as exc:
        values = {"status": "failed", "error": str(exc)}
    except Exception as exc:
        values = {"status": "failed", "error": crashed(f"export {export_id}", exc)}
        shutil.rmtree(out_dir, ignore_errors=True)
    values["seconds"] = round(time.perf_counter() - started, 2)
    with session_scope() as session:
        service.finish(session, export_id=xid, values=values)
    return str(values["status"])


@celery_app.task(name=SERVE_DEPLOYMENT)
def serve_deployment(deployment_id: str) -> str:
    """Serve one deployment until it is stopped: the model server runs in this worker, on a
    port of its own; tunelab's web process forwards requests to it."""
    import socket
    import threading

    import uvicorn

    from app.services import deployments
    from worker.serving.engine import ServingEngine
    from worker.serving.openai_app import make_app
    from worker.tasks.training import SHUTTING_DOWN, worker_name

    settings = get_settings()
    did = uuid.UUID(deployment_id)
    with session_scope() as session:
        deployment = deployments.claim(session, deployment_id=did, worker=worker_name())
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
    # Loading a large model takes longer than the lease: the row is kept alive meanwhile, and
    # a deployment stopped while it loads is noticed as soon as the load ends.
    loading = threading.Event()

    def beat_while_loading() -> None:
        while not loading.wait(settings.heartbeat_seconds):
            try:
                with session_scope() as session:
                    deployments.heartbeat(session, deployment_id=did)
            except Exception:
                log.exception("heartbeat of deployment %s failed", deployment_id)

    threading.Thread(target=beat_while_loading, name=f"load-{name}", daemon=True).start()
    try:
        engine = ServingEngine(
            base_model,
            adapters,
            model_cache_dir=settings.model_cache_dir,
            served_name=f"{name}/base",
            allow_downloads=settings.allow_hub_downloads,
        )
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
        loading.set()
        host = settings.serve_advertise_host or settings.serve_host
        with session_scope() as session:
            if not deployments.mark_running(
                session, deployment_id=did, url=f"http://{host}:{port}"
            ):
                return "stopped before it started"
        while not SHUTTING_DOWN.is_set():
            time.sleep(1.0)
            with session_scope() as session:
                status = deployments.heartbeat(session, deployment_id=did)
            if status != "running":
                break
    except Exception as exc:
        loading.set()
        log.error("deployment %s failed:\n%s", deployment_id, traceback.format_exc())
        error = (
            str(exc)
            if isinstance(exc, TrainingError | ValueError)
            else (f"the model server failed ({type(exc).__name__}: {exc})")
        )
    finally:
        loading.set()
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout=30)
        if engine is not None:
            engine.close()
        with session_scope() as session:
            deployments.mark_stopped(session, deployment_id=did, error=error)
    return "failed" if error else "stopped"
