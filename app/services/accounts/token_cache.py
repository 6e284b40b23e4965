"""A few seconds' memory of API tokens already checked against the database.

A script polling a job's status sends the same token many times a second; without this, each
request looked the token and its user up again, on a database connection of its own. A token
that was valid, unrevoked, unexpired and whose user was active at most ``token_cache_seconds`` (setting,
5 by default) ago is taken as such again, without the database: its scopes, and a copy of its user's row.

What may change a token's answer empties the whole memory, when the change is committed in
this process: a token revoked, expired, re-scoped or deleted; a user deactivated, given
another role, deleted (any change to a user but the time of their last login). A change made
by another process (``tunelab token revoke`` in a terminal, another web server) is seen within
that time. A token's expiry is checked on every request, from the remembered time.
Unknown, revoked or expired tokens are never remembered: every refusal asks the database.
Project membership is not remembered either: each object reached is checked as before.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction, make_transient_to_detached

from app.core.config import get_settings
from app.core.db import utcnow
from app.models import ApiToken, User

MAX_ENTRIES = 1024
# Columns whose change cannot change what a token may do (updated as a side effect of use).
_HARMLESS: dict[type, frozenset[str]] = {
    ApiToken: frozenset({"last_used_at"}),
    User: frozenset({"last_login_at"}),
}
_CHANGED = "tunelab_token_cache_changed"


@dataclass(frozen=True)
class Checked:
    """What the database said about a token, ``checked_at`` (``time.monotonic()``)."""

    token_id: uuid.UUID
    scopes: tuple[str, ...]
    expires_at: datetime | None
    user: dict[str, Any]  # the user's column values
    checked_at: float


_lock = threading.Lock()
_entries: OrderedDict[str, Checked] = OrderedDict()
_generation = 0


def generation() -> int:
    """Take this before reading a token from the database and hand it to ``remember``: an
    answer read across a change is not remembered."""
    return _generation


def remember(key: str, seen: int, token: ApiToken, user: User) -> None:
    """Keep a token found valid (``key``: its digest) for ``token_cache_seconds``."""
    if get_settings().token_cache_seconds <= 0:
        return
    columns = {attr.key: getattr(user, attr.key) for attr in inspect(User).column_attrs}
    checked = Checked(
        token_id=token.id,
        scopes=tuple(token.scopes),
        expires_at=token.expires_at,
        user=columns,
        checked_at=time.monotonic(),
    )
    with _lock:
        if seen != _generation:
            return
        _entries[key] = checked
        _entries.move_to_end(key)
        while len(_entries) > MAX_ENTRIES:
            _entries.popitem(last=False)


def recall(key: str) -> Checked | None:
    """The token's remembered check, if it is recent and the token has not expired since."""
    with _lock:
        checked = _entries.get(key)
        if checked is None:
            return None
        if time.monotonic() - checked.checked_at > get_settings().token_cache_seconds:
            del _entries[key]
            return None
    if checked.expires_at is not None and checked.expires_at < utcnow():
        forget(key)
        return None
    return checked


def user_of(checked: Checked, session: Session) -> User:
    """A fresh copy of the remembered user, in ``session`` as if loaded there (no database
    work: the row is not read again, and nothing is written unless the request changes it)."""
    user = User(**checked.user)
    make_transient_to_detached(user)
    session.add(user)
    return user


def forget(key: str) -> None:
    with _lock:
        _entries.pop(key, None)


def forget_all() -> None:
    global _generation
    with _lock:
        _generation += 1
        _entries.clear()


# --- what empties it -----------------------------------------------------------------------


def _matters(obj: object, deleted: bool) -> bool:
    harmless = _HARMLESS.get(type(obj))
    if harmless is None:
        return False
    if deleted:
        return True
    state = inspect(obj)
    return any(attr.key not in harmless and attr.history.has_changes() for attr in state.attrs)


@event.listens_for(Session, "after_flush")
def _after_flush(session: Session, flush: UOWTransaction) -> None:
    if any(_matters(obj, False) for obj in session.dirty) or any(
        _matters(obj, True) for obj in session.deleted
    ):
        session.info[_CHANGED] = True
        # Now as well as at the commit: a test's "commit" may be a savepoint's.
        forget_all()


@event.listens_for(Session, "do_orm_execute")
def _bulk_change(state: ORMExecuteState) -> None:
    if (state.is_update or state.is_delete) and any(
        mapper.class_ in _HARMLESS for mapper in state.all_mappers
    ):
        session = state.session
        session.info[_CHANGED] = True
        forget_all()  # also now: an UPDATE in autocommit mode is committed at once


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if session.info.pop(_CHANGED, False):
        forget_all()


@event.listens_for(Session, "after_soft_rollback")
def _after_rollback(session: Session, previous: Any) -> None:
    session.info.pop(_CHANGED, None)
