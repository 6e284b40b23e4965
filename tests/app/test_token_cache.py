"""API tokens found valid are remembered for a few seconds (app.services.accounts.token_cache):
what this process changes is refused at once, what another process changes within the bound."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import Connection, select, text
from sqlalchemy.orm import Session

from app.core.config import get_settings
from app.core.db import utcnow
from app.models import User
from app.services.accounts import credentials


def token_of(connection: Connection, email: str, **kwargs: Any) -> tuple[str, str]:
    """A read/write token for ``email`` made inside the test's transaction: (id, secret)."""
    with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
        user = session.scalar(select(User).where(User.email == email))
        assert user is not None
        scopes = ["read", "write"]
        token, secret = credentials.create_token(
            session, user=user, name="cache", scopes=scopes, granted=set(scopes), **kwargs
        )
        session.commit()
        return str(token.id), secret


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def make_trainer(api: httpx.Client) -> dict[str, Any]:
    email = f"trainer-{uuid.uuid4().hex[:8]}@tunelab.test"
    made = api.post("/users", json={"email": email, "role": "trainer", "password": "long pw 123"})
    assert made.status_code == 201, made.text
    return made.json()


def test_a_token_revoked_through_the_api_is_refused_on_its_next_request(
    api: httpx.Client,
) -> None:
    created = api.post("/tokens", json={"name": "poller", "scopes": ["read"]}).json()
    for _ in range(3):  # the second and third are answered from memory
        assert api.get("/jobs", headers=bearer(created["token"])).status_code == 200
    assert api.post(f"/tokens/{created['id']}/revoke").status_code == 200
    refused = api.get("/jobs", headers=bearer(created["token"]))
    assert refused.status_code == 401
    assert "revoked" in refused.json()["detail"]


def test_a_user_deactivated_or_demoted_is_refused_at_once(
    api: httpx.Client, connection: Connection
) -> None:
    trainer = make_trainer(api)
    _, secret = token_of(connection, trainer["email"])
    assert api.get("/jobs", headers=bearer(secret)).status_code == 200
    assert api.get("/jobs", headers=bearer(secret)).status_code == 200
    assert api.patch(f"/users/{trainer['id']}", json={"role": "reviewer"}).status_code == 200
    assert api.get("/jobs", headers=bearer(secret)).status_code == 403
    assert api.patch(f"/users/{trainer['id']}", json={"is_active": False}).status_code == 200
    assert api.get("/me", headers=bearer(secret)).status_code == 401


def test_a_revocation_by_another_process_takes_effect_within_the_bound(
    api: httpx.Client, connection: Connection
) -> None:
    trainer = make_trainer(api)
    token_id, secret = token_of(connection, trainer["email"])
    assert api.get("/me", headers=bearer(secret)).status_code == 200
    # Plain SQL, as `tunelab token revoke` in a terminal would: this process is not told.
    connection.execute(
        text("UPDATE api_tokens SET revoked_at = now() WHERE id = :id"), {"id": token_id}
    )
    revoked_at = time.monotonic()
    bound = get_settings().token_cache_seconds
    while api.get("/me", headers=bearer(secret)).status_code == 200:
        assert time.monotonic() - revoked_at < bound + 1, "still accepted past the bound"
        time.sleep(0.2)


def test_a_remembered_token_is_refused_once_it_expires(
    api: httpx.Client, connection: Connection
) -> None:
    trainer = make_trainer(api)
    expires = utcnow() + timedelta(seconds=1.5)
    _, secret = token_of(connection, trainer["email"], expires_at=expires)
    assert api.get("/me", headers=bearer(secret)).status_code == 200
    assert api.get("/me", headers=bearer(secret)).status_code == 200
    time.sleep(max(0.0, (expires - utcnow()).total_seconds()) + 0.1)
    assert api.get("/me", headers=bearer(secret)).status_code == 401
