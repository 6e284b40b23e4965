"""The audit log: security-relevant actions, visible to admins."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import AuditEvent, User


def record(
    session: Session,
    *,
    action: str,
    actor: User | None,
    target: str = "",
    ip: str = "",
    details: dict[str, Any] | None = None,
) -> None:
    """Add an audit event to the current transaction."""
    session.add(
        AuditEvent(
            action=action,
            actor_id=actor.id if actor else None,
            actor_email=actor.email if actor else "",
            target=target[:255],
            ip=ip[:64],
            details=details or {},
        )
    )


def list_events(
    session: Session, *, limit: int, offset: int, action: str | None = None
) -> tuple[list[AuditEvent], int]:
    """Newest first, optionally one kind of action."""
    where = [AuditEvent.action == action] if action else []
    total = session.scalar(select(func.count()).select_from(AuditEvent).where(*where)) or 0
    rows = session.scalars(
        select(AuditEvent)
        .where(*where)
        .order_by(AuditEvent.created_at.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return list(rows), total
