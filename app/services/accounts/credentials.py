"""Browser sessions and API tokens: creating, checking and revoking the secrets people hold."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.core.db import utcnow
from app.core.errors import Forbidden, InvalidInput, NotFound
from app.core.security import digest, new_secret
from app.models import ApiToken, User, WebSession
from app.services.accounts import audit

SESSION_LIFETIME = timedelta(days=14)
SCOPES = ("read", "write", "admin")
TOKEN_PREFIX = "tl_"


def expand_scopes(scopes: list[str]) -> set[str]:
    """admin implies write, write implies read."""
    granted = set(scopes)
    if "admin" in granted:
        granted.add("write")
    if "write" in granted:
        granted.add("read")
    return granted


# --- browser sessions ---------------------------------------------------------------------


def start_session(session: Session, *, user: User, ip: str, user_agent: str) -> str:
    """Create a server-side session; returns the cookie value (shown to nobody else)."""
    secret = new_secret()
    session.add(
        WebSession(
            id=digest(secret),
            user_id=user.id,
            csrf_token=new_secret(),
            expires_at=utcnow() + SESSION_LIFETIME,
            last_seen_at=utcnow(),
            ip=ip[:64],
            user_agent=user_agent[:255],
        )
    )
    session.flush()
    return secret


def session_for_cookie(session: Session, *, cookie: str) -> tuple[WebSession, User] | None:
    web = session.get(WebSession, digest(cookie))
    now = utcnow()
    if web is None or web.revoked_at is not None or web.expires_at < now:
        return None
    user = session.get(User, web.user_id)
    if user is None or not user.is_active:
        return None
    # Written at most once a minute: pages poll every few seconds.
    if web.last_seen_at is None or now - web.last_seen_at > timedelta(minutes=1):
        web.last_seen_at = now
        session.commit()
    return web, user


def end_session(session: Session, *, cookie: str, user: User, ip: str) -> None:
    session.execute(
        update(WebSession).where(WebSession.id == digest(cookie)).values(revoked_at=utcnow())
    )
    audit.record(session, action="logout", actor=user, target=user.email, ip=ip)


def revoke_sessions(session: Session, *, user: User, actor: User) -> None:
    """Log a user out everywhere (e.g. after a role change or a lost laptop)."""
    session.execute(
        update(WebSession)
        .where(WebSession.user_id == user.id, WebSession.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    audit.record(session, action="sessions.revoked", actor=actor, target=user.email)


# --- API tokens ---------------------------------------------------------------------------


def create_token(
    session: Session,
    *,
    user: User,
    name: str,
    scopes: list[str],
    granted: set[str],
    expires_at: datetime | None = None,
    ip: str = "",
) -> tuple[ApiToken, str]:
    """Create a token; the secret is returned once and only its digest is stored.

    ``granted`` are the scopes of the credential asking: a token never carries more than the
    token (or session) that made it, so a leaked read token cannot mint a write token.
    """
    name = name.strip()
    if not name or len(name) > 100:
        raise InvalidInput("give the token a name of 1 to 100 characters")
    unknown = set(scopes) - set(SCOPES)
    if unknown or not scopes:
        raise InvalidInput(f"scopes must be some of {', '.join(SCOPES)}")
    if "admin" in scopes and user.role != "admin":
        raise InvalidInput("only admins can create tokens with the admin scope")
    beyond = sorted(set(scopes) - granted)
    if beyond:
        raise Forbidden(
            f"a token cannot grant more than the credential that creates it: "
            f"{', '.join(beyond)} is not among {', '.join(sorted(granted))}"
        )
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidInput("the expiry must be in the future")
    secret = new_secret(TOKEN_PREFIX)
    token = ApiToken(
        user_id=user.id,
        name=name,
        token_hash=digest(secret),
        prefix=secret[:10],
        scopes=sorted(set(scopes)),
        expires_at=expires_at,
    )
    session.add(token)
    session.flush()
    audit.record(
        session,
        action="token.created",
        actor=user,
        target=f"token {token.prefix}…",
        ip=ip,
        details={"name": name, "scopes": token.scopes},
    )
    return token, secret


def token_for_secret(session: Session, *, secret: str) -> tuple[ApiToken, User] | None:
    token = session.scalar(select(ApiToken).where(ApiToken.token_hash == digest(secret)))
    now = utcnow()
    if token is None or token.revoked_at is not None:
        return None
    if token.expires_at is not None and token.expires_at < now:
        return None
    user = session.get(User, token.user_id)
    if user is None or not user.is_active:
        return None
    if token.last_used_at is None or now - token.last_used_at > timedelta(minutes=1):
        token.last_used_at = now
        session.commit()
    return token, user


def list_tokens(session: Session, *, user: User) -> list[ApiToken]:
    return list(
        session.scalars(
            select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.created_at.desc())
        ).all()
    )


def revoke_token(
    session: Session, *, user: User, token_id: uuid.UUID, others: bool, ip: str = ""
) -> ApiToken:
    """Revoke one of the user's own tokens, or anyone's when ``others`` (an admin acting with
    the admin scope)."""
    token = session.get(ApiToken, token_id)
    if token is None or (token.user_id != user.id and not others):
        raise NotFound("token not found")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        audit.record(
            session,
            action="token.revoked",
            actor=user,
            target=f"token {token.prefix}…",
            ip=ip,
            details={"name": token.name},
        )
    return token
