"""The workers that have started, with what each can run (``worker.spec.placement``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, UTCDateTime


class WorkerRecord(Base):
    """One worker process, as it advertised itself when it started. Its upkeep refreshes
    ``last_seen``; a worker unseen for ``TUNELAB_WORKER_OFFLINE_SECONDS`` is offline, one
    that stopped says so in ``stopped_at``."""

    __tablename__ = "workers"

    # The name its leases carry (``worker.tasks.runtime.worker_name``): host (or
    # TUNELAB_WORKER_NAME) and process id.
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    # worker.spec.placement.Capacity.as_dict()
    capacity: Mapped[dict[str, Any]] = mapped_column(JSON)
    queues: Mapped[list[str]] = mapped_column(JSON)
    # Model folders in its model cache.
    models: Mapped[list[str]] = mapped_column(JSON)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
