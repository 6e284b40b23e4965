"""The app in this process (FastAPI's TestClient), on this run's Postgres database, each test
inside a transaction that is rolled back at its end: the fast tier's API tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from app.api.deps import get_session
from app.core.db import get_engine
from app.main import app
from app.models import User
from app.services.accounts import credentials
from tests.conftest import ADMIN_EMAIL


@pytest.fixture
def connection(postgres_database: str) -> Iterator[Connection]:
    """The test's own connection, in a transaction nothing commits for real."""
    connection = get_engine().connect()
    transaction = connection.begin()
    try:
        yield connection
    finally:
        transaction.rollback()
        connection.close()


@pytest.fixture
def client(connection: Connection) -> Iterator[TestClient]:
    """HTTP into the app in this process; each request's session works inside the test's
    transaction (its commits are savepoints)."""

    def session() -> Iterator[Session]:
        bound = Session(
            bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
        )
        try:
            yield bound
        finally:
            bound.close()

    app.dependency_overrides[get_session] = session
    try:
        with TestClient(app) as test_client:
            yield test_client
    finally:
        app.dependency_overrides.pop(get_session, None)


@pytest.fixture
def api(client: TestClient, connection: Connection) -> TestClient:
    """``/api/v1`` as the admin, with a token made inside the test's transaction."""
    with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
        admin = session.scalar(select(User).where(User.email == ADMIN_EMAIL))
        assert admin is not None
        scopes = ["read", "write", "admin"]
        _, secret = credentials.create_token(
            session, user=admin, name="tests", scopes=scopes, granted=set(scopes)
        )
        session.commit()
    client.base_url = client.base_url.join("/api/v1")
    client.headers["Authorization"] = f"Bearer {secret}"
    return client


@pytest.fixture
def browser(client: TestClient, connection: Connection) -> TestClient:
    """The admin logged in, as a browser is: the session cookie, asking for HTML."""
    with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
        admin = session.scalar(select(User).where(User.email == ADMIN_EMAIL))
        assert admin is not None
        admin.locale = None
        cookie = credentials.start_session(session, user=admin, ip="127.0.0.1", user_agent="test")
        session.commit()
    client.cookies.set("tunelab_session", cookie)
    client.headers["Accept"] = "text/html"
    return client
