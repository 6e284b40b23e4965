"""The workers: what each advertised (capacity, queues, cached models), when it was last
seen, whether it is online, and the jobs it runs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from app.api.deps import CurrentReader, SessionDep, SettingsDep, make_router
from app.services import workers as service

router = make_router(prefix="/workers", tags=["workers"])


class WorkerRead(BaseModel):
    name: str = Field(description="the name its jobs show: host (or TUNELAB_WORKER_NAME) and pid")
    host: str
    capacity: dict[str, Any] = Field(
        description="gpus, gpu_name, gpu_memory_gb (per GPU), four_bit, cuda, cpu_threads, "
        "memory_class (GB)"
    )
    queues: list[str] = Field(description="the queues it consumes: its capacity classes")
    models: list[str] = Field(description="the model folders in its model cache")
    started_at: datetime
    last_seen: datetime
    stopped_at: datetime | None
    online: bool
    running_jobs: list[str]


@router.get("", response_model=list[WorkerRead])
def list_workers(session: SessionDep, settings: SettingsDep, me: CurrentReader) -> list[WorkerRead]:
    """Every worker that registered in the last week, online ones first."""
    return [
        WorkerRead.model_validate(w.as_dict())
        for w in service.list_workers(session, settings=settings)
    ]
