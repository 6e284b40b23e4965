"""Engine, sessions and the declarative base shared by every model."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import DateTime, Engine, MetaData, TypeDecorator, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from app.core.config import get_settings

log = logging.getLogger(__name__)

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware timestamps on both backends: SQLite drops the offset, so it is restored
    on the way out and every value is converted to UTC on the way in."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a timezone-aware column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UUIDPrimaryKey:
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)


class Timestamped:
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


def make_engine(url: str) -> Engine:
    settings = get_settings()
    # The web server's thread pool runs every route's database work, one session (so one
    # connection) per request at a time: a pool as large as the thread pool never makes a
    # thread wait for a connection another waiting thread holds. Past pool_timeout a request
    # gets 503 with Retry-After (see app.main), never a hang.
    pool = {
        "pool_size": settings.db_pool_size,
        "max_overflow": max(0, settings.web_threads - settings.db_pool_size) + 5,
        "pool_timeout": settings.db_pool_timeout,
    }
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **pool
        )
        _guard_event_loop(engine)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets the web server read while the worker writes metrics; foreign keys are
            # off by default in SQLite.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    connect_args: dict[str, Any] = {}
    if _idle_transaction_seconds is not None:
        # Postgres ends a session left idle inside a transaction this long, and its locks go
        # with it (see end_idle_transactions_after).
        timeout_ms = max(1, int(_idle_transaction_seconds * 1000))
        connect_args["options"] = f"-c idle_in_transaction_session_timeout={timeout_ms}"
    engine = create_engine(url, pool_pre_ping=True, connect_args=connect_args, **pool)
    _guard_event_loop(engine)
    return engine


# Set in worker processes (worker.tasks.upkeep, as Celery sets up): a worker frozen (SIGSTOP,
# a stalled VM) in the middle of a transaction keeps the row locks of its claim, heartbeat or
# progress write, and the reaper's conditional UPDATE of that row would wait on them for as
# long as the freeze lasts: the job never re-queued. Postgres ends such a transaction after
# the lease instead, so the reaper goes on and the frozen worker, once it wakes, finds its
# connection gone and its lease lost (it writes nothing more).
_idle_transaction_seconds: float | None = None


def end_idle_transactions_after(seconds: float | None) -> None:
    """Have Postgres end this process's transactions left idle ``seconds`` (None: never);
    connections made from here on (the pool is started afresh) carry the setting."""
    global _idle_transaction_seconds
    _idle_transaction_seconds = seconds
    if get_engine.cache_info().currsize:
        get_engine().dispose()
    get_engine.cache_clear()
    get_sessionmaker.cache_clear()


# The web server's event loop, once it runs (app.main's lifespan says which). Other loops (a
# test driving a browser through Playwright's sync API runs one) are none of the guard's
# business.
_served_loop: asyncio.AbstractEventLoop | None = None


def serve_on_this_loop() -> None:
    """Called by the web server from inside its event loop when it starts."""
    global _served_loop
    _served_loop = asyncio.get_running_loop()


def _on_event_loop() -> bool:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return False
    return loop is _served_loop


def _guard_event_loop(engine: Engine) -> None:
    """Catch blocking database work on the web server's event loop: one such query stalls
    every request, and one waiting for a pooled connection stalls them for good. Strict mode
    (the tests) raises; otherwise it is logged once per statement site."""
    strict = get_settings().strict_event_loop

    def check(*_: Any) -> None:
        if not _on_event_loop():
            return
        message = (
            "database work ran on the event loop; run it from a plain `def` route or through "
            "app.api.deps.in_thread"
        )
        if strict:
            raise RuntimeError(message)
        log.warning(message, stack_info=True)

    event.listen(engine, "before_cursor_execute", check)
    event.listen(engine.pool, "checkout", check)


@lru_cache
def get_engine() -> Engine:
    settings = get_settings()
    if settings.sqlalchemy_url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    return make_engine(settings.sqlalchemy_url)


@lru_cache
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session that commits on success and rolls back on any error."""
    session = get_sessionmaker()()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
