"""Users, roles, logins (with throttling) and one-time login links."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from app.core.db import utcnow
from app.core.errors import Conflict, InvalidInput, NotFound, TooManyRequests, Unauthorized
from app.core.security import (
    MIN_PASSWORD_LENGTH,
    digest,
    hash_password,
    new_secret,
    verify_password,
)
from app.models import LoginAttempt, LoginLink, ModelPermission, Role, User
from app.services.accounts import audit

LOGIN_WINDOW = timedelta(minutes=1)
# Per account, against guessing one password; per address (higher, since many people can share
# one address behind a proxy), against trying one password on many accounts.
MAX_FAILURES_PER_ACCOUNT = 10
MAX_FAILURES_PER_ADDRESS = 100


def normalize_email(email: str) -> str:
    return email.strip().lower()


def create_user(
    session: Session,
    *,
    email: str,
    role: Role,
    password: str | None = None,
    display_name: str = "",
    actor: User | None = None,
) -> User:
    """Create an account; the password, if any, is stored as an argon2 hash."""
    email = normalize_email(email)
    if "@" not in email or len(email) > 320:
        raise InvalidInput("enter a valid e-mail address", errors=[])
    if password is not None and len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    if session.scalar(select(User.id).where(User.email == email)) is not None:
        raise Conflict(f"a user with the e-mail {email} already exists")
    user = User(
        email=email,
        role=role,
        display_name=display_name or email.split("@")[0],
        password_hash=hash_password(password) if password else None,
    )
    session.add(user)
    session.flush()
    audit.record(
        session, action="user.created", actor=actor, target=email, details={"role": str(role)}
    )
    return user


def get_user(session: Session, *, user_id: uuid.UUID) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("user not found")
    return user


def find_user(session: Session, *, email: str) -> User:
    user = session.scalar(select(User).where(User.email == normalize_email(email)))
    if user is None:
        raise NotFound(f"no user with the e-mail {email}")
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.email)).all())


def set_role(session: Session, *, user: User, role: Role, actor: User) -> User:
    """Change a user's role; audited."""
    old = user.role
    user.role = role
    audit.record(
        session,
        action="user.role_changed",
        actor=actor,
        target=user.email,
        details={"from": old, "to": str(role)},
    )
    return user


def set_locale(session: Session, *, user: User, locale: str | None) -> User:
    """The language the user reads tunelab in (a supported locale), or None for the browser's."""
    user.locale = locale
    session.flush()
    return user


def authenticate(session: Session, *, email: str, password: str, ip: str) -> User:
    """Check a password login, refusing after too many recent failures.

    Every attempt is recorded. Past the failures allowed for the account or the address within
    LOGIN_WINDOW, even a correct password is refused until the window passes.
    """
    email = normalize_email(email)
    since = utcnow() - LOGIN_WINDOW

    def recent_failures(where: ColumnElement[bool]) -> int:
        query = (
            select(func.count())
            .select_from(LoginAttempt)
            .where(LoginAttempt.created_at >= since, LoginAttempt.succeeded.is_(False), where)
        )
        return session.scalar(query) or 0

    if (
        recent_failures(LoginAttempt.email == email) >= MAX_FAILURES_PER_ACCOUNT
        or recent_failures(LoginAttempt.ip == ip) >= MAX_FAILURES_PER_ADDRESS
    ):
        audit.record(session, action="login.throttled", actor=None, target=email, ip=ip)
        raise TooManyRequests("too many failed logins; wait a minute and try again")
    user = session.scalar(select(User).where(User.email == email))
    ok = verify_password(password, user.password_hash if user else None)
    ok = ok and user is not None and user.is_active
    session.add(LoginAttempt(email=email, ip=ip, succeeded=ok))
    if not ok or user is None:
        audit.record(session, action="login.failed", actor=None, target=email, ip=ip)
        raise Unauthorized("wrong e-mail address or password")
    user.last_login_at = utcnow()
    audit.record(session, action="login.succeeded", actor=user, target=email, ip=ip)
    return user


def create_login_link(session: Session, *, user: User, valid_for: timedelta) -> str:
    """A secret for /login/link/{secret} that logs ``user`` in once."""
    secret = new_secret()
    session.add(LoginLink(id=digest(secret), user_id=user.id, expires_at=utcnow() + valid_for))
    session.flush()
    return secret


def use_login_link(session: Session, *, secret: str, ip: str) -> User:
    """Spend a one-time link; raises Unauthorized if it is unknown, used or expired."""
    link = session.get(LoginLink, digest(secret))
    now = utcnow()
    if link is None or link.used_at is not None or link.expires_at < now:
        raise Unauthorized("this login link is not valid any more; ask for a new one")
    link.used_at = now
    user = get_user(session, user_id=link.user_id)
    if not user.is_active:
        raise Unauthorized("this account is disabled")
    user.last_login_at = now
    audit.record(session, action="login.link_used", actor=user, target=user.email, ip=ip)
    return user


def ensure_local_admin(session: Session) -> tuple[User, bool]:
    """The embedded first start: an admin without a password if there is no user yet."""
    existing = session.scalar(select(User).where(User.role == Role.admin).limit(1))
    if existing is not None:
        return existing, False
    return create_user(session, email="admin@localhost", role=Role.admin), True


def model_permissions(session: Session) -> list[ModelPermission]:
    return list(session.scalars(select(ModelPermission).order_by(ModelPermission.model)).all())


def set_model_permission(
    session: Session,
    *,
    model: str,
    trust_remote_code: bool,
    allow_pickle_weights: bool,
    actor: User,
    ip: str = "",
) -> ModelPermission:
    """Allow (or stop allowing) one named base model to run its own code or load pickles."""
    row = session.scalar(select(ModelPermission).where(ModelPermission.model == model))
    if row is None:
        row = ModelPermission(model=model)
        session.add(row)
    row.trust_remote_code = trust_remote_code
    row.allow_pickle_weights = allow_pickle_weights
    row.granted_by_id = actor.id
    audit.record(
        session,
        action="model_permission.set",
        actor=actor,
        target=model,
        ip=ip,
        details={
            "trust_remote_code": trust_remote_code,
            "allow_pickle_weights": allow_pickle_weights,
        },
    )
    session.flush()
    return row
