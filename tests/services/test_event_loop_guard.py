"""The web server's event loop never runs database work (the tests run with the guard strict):
one query there stalls every request, and one waiting for a pooled connection stalls them for
good. Work on a thread is fine, and so is another event loop (a browser test's)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from app.core import db


def query() -> int:
    with db.get_sessionmaker()() as session:
        return int(session.scalar(text("select 1")) or 0)


def test_database_work_on_the_served_loop_is_refused(postgres_database: str) -> None:
    async def serve() -> int:
        db.serve_on_this_loop()
        return query()

    with pytest.raises(RuntimeError, match="event loop"):
        asyncio.run(serve())


def test_database_work_on_a_thread_of_the_served_loop_is_fine(postgres_database: str) -> None:
    async def serve() -> int:
        db.serve_on_this_loop()
        return await asyncio.to_thread(query)

    assert asyncio.run(serve()) == 1


def test_another_event_loop_is_none_of_the_guards_business(postgres_database: str) -> None:
    async def served() -> None:
        db.serve_on_this_loop()

    async def elsewhere() -> int:
        return query()

    asyncio.run(served())
    assert asyncio.run(elsewhere()) == 1
