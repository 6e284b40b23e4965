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
from app.services import evaluations as evaluations_service
from app.services import exports as service
from worker.celery_app import MAKE_EXPORT, celery_app
from worker.deploy.export import ExportError, export_adapter, export_merged
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
        artifact = evaluations_service.job_adapter(session, job_id=export.job_id)
        if job is None or artifact is None:
            service.finish(
                session, export_id=xid, values={"status": "failed", "error": "the model is gone"}
            )
            return "failed"
        card = service.card_data(session, job=job)
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
        log.error("export %s crashed:\n%s", export_id, traceback.format_exc())
        values = {"status": "failed", "error": f"internal error ({type(exc).__name__}: {exc})"}
        shutil.rmtree(out_dir, ignore_errors=True)
    values["seconds"] = round(time.perf_counter() - started, 2)
    with session_scope() as session:
        service.finish(session, export_id=xid, values=values)
    return str(values["status"])
