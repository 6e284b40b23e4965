"""The lease every kind of queued work carries: jobs, evaluations, exports, deployments and
review answering. One shape, so one service (``app.services.leases``) claims, heart-beats,
finishes, hands back and reaps them all, and one worker runtime holds them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import UTCDateTime


class Leased:
    """Columns of a row that waits in a queue and is worked on by one worker at a time.

    The row, not the broker, is the truth: a worker claims it with a conditional update,
    proves it is alive through ``heartbeat_at``, and only the worker named in ``worker`` may
    write its outcome. ``offered_at`` is when the broker was last handed its message, so a
    message lost with the broker's data is noticed and sent again.
    """

    queue: Mapped[str] = mapped_column(String(64), default="training")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(255))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    offered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    error: Mapped[str | None] = mapped_column(Text)
