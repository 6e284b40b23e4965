"""Accounts without a terminal: a user sets their own password, an admin invites by link.

An invitation is an account (without a password) and a one-time login link that expires; the
invitee opens it, is logged in once and sets a password on the account page. Both steps go in
the audit log.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.db import utcnow
from app.core.errors import Conflict, InvalidInput
from app.core.i18n import N_
from app.core.security import MIN_PASSWORD_LENGTH, hash_password, verify_password
from app.models import Role, User
from app.services.accounts import audit
from app.services.accounts import users as accounts

INVITE_DAYS = 7
MAX_PASSWORD_LENGTH = 1024


@dataclass(frozen=True)
class Invitation:
    user: User
    secret: str  # shown once, to the admin who invites; only its digest is stored
    expires_at: datetime


def link_for(base_url: str, secret: str) -> str:
    """The link to send: this server's address as the admin reached it."""
    return f"{base_url.rstrip('/')}/login/link/{secret}"


def set_password(
    session: Session, *, user: User, new_password: str, current_password: str = "", ip: str = ""
) -> None:
    """Set or change ``user``'s own password; one already set must be given again first."""
    had_one = user.password_hash is not None
    if had_one and not verify_password(current_password, user.password_hash):
        raise InvalidInput.on("current_password", N_("the current password is not right"))
    if len(new_password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput.on(
            "new_password", f"the password must have at least {MIN_PASSWORD_LENGTH} characters"
        )
    if len(new_password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput.on("new_password", N_("the password is too long"))
    user.password_hash = hash_password(new_password)
    audit.record(
        session,
        action="user.password_changed" if had_one else "user.password_set",
        actor=user,
        target=user.email,
        ip=ip,
    )
    session.flush()


def invite(
    session: Session, *, email: str, role: Role, actor: User, ip: str = "", days: int = INVITE_DAYS
) -> Invitation:
    """An account for ``email`` and a one-time login link for it, valid for ``days`` days.

    Inviting an address again that has never logged in gives a new link (the old ones still
    expire on their own); an account already in use is refused.
    """
    if not 1 <= days <= 30:
        raise InvalidInput.on("days", N_("an invitation is valid for 1 to 30 days"))
    address = accounts.normalize_email(email)
    user = session.scalar(select(User).where(User.email == address))
    if user is None:
        try:
            user = accounts.create_user(session, email=address, role=role, actor=actor)
        except InvalidInput as exc:
            raise InvalidInput.on("email", exc.message) from None
    elif user.last_login_at is not None or user.password_hash is not None:
        raise Conflict(N_("this person already has an account: they can log in"))
    valid_for = timedelta(days=days)
    secret = accounts.create_login_link(session, user=user, valid_for=valid_for)
    audit.record(
        session,
        action="user.invited",
        actor=actor,
        target=address,
        ip=ip,
        details={"role": str(user.role), "days": days},
    )
    session.flush()
    return Invitation(user=user, secret=secret, expires_at=utcnow() + valid_for)
