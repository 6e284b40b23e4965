"""Handing committed rows to the broker. Only ids travel: the row holds everything else.

Commit, then offer: a row is committed as waiting before the broker hears of it, so the
broker never delivers an id the database does not know. When the broker cannot be reached,
the request that made the row still succeeds: the row waits with ``offered_at`` unset, and an
idle worker's sweeper sends it once the broker is back (``worker.tasks.upkeep``).
"""

from __future__ import annotations

import logging
import uuid

from sqlalchemy.orm import Session

from app.services import leases
from app.services.leases import Kind, Offer

log = logging.getLogger(__name__)

# A broker that does not answer at once is treated as down: the row waits for the sweeper
# rather than a web request hanging on retries.
_BRIEF_RETRY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}


def offer(session: Session, kind: Kind, item_id: uuid.UUID, queue: str) -> bool:
    """Send one committed, waiting row to its queue; False when the broker could not take
    it (the row keeps waiting and is sent again later)."""
    from app.core.broker import celery_app

    try:
        celery_app.send_task(
            kind.task, args=[str(item_id)], queue=queue, retry=True, retry_policy=_BRIEF_RETRY
        )
    except Exception as exc:  # any broker failure: the sweeper is the plan B
        log.warning("the queue could not be reached for %s %s: %s", kind.name, item_id, exc)
        return False
    leases.mark_offered(session, Offer(kind, item_id, queue))
    session.commit()
    return True


def offer_all(session: Session, offers: list[Offer]) -> int:
    """Send several rows (re-queued or swept); how many the broker took."""
    return sum(offer(session, o.kind, o.item_id, o.queue) for o in offers)
