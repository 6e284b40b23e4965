"""Accounts without a terminal (issue 15): a user sets a password on the account page and logs
in with it; an admin invites by a one-time link that expires, and both are audited."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from app.core.db import utcnow
from app.core.i18n import LOCALE_COOKIE
from app.models import AuditEvent, LoginLink, User
from app.services.accounts import credentials
from app.services.accounts import users as accounts
from tests.app.pages import csrf
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD

ZH = {"Accept-Language": "zh-CN"}


def log_in_as(client: TestClient, connection: Connection, email: str) -> None:
    with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
        user = session.scalar(select(User).where(User.email == email))
        if user is None:
            user = accounts.create_user(session, email=email, role="trainer")
        cookie = credentials.start_session(session, user=user, ip="127.0.0.1", user_agent="test")
        session.commit()
    client.cookies.set("tunelab_session", cookie)
    client.headers["Accept"] = "text/html"


def password_login(client: TestClient, email: str, password: str) -> httpx.Response:
    client.cookies.delete("tunelab_session")
    form = client.get("/login")
    return client.post(
        "/login",
        data={"email": email, "password": password, "csrf_token": csrf(form.text)},
        follow_redirects=False,
    )


def audit_actions(connection: Connection, target: str) -> list[str]:
    with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
        rows = session.scalars(
            select(AuditEvent.action)
            .where(AuditEvent.target == target)
            .order_by(AuditEvent.created_at)
        )
        return list(rows)


def test_a_user_without_a_password_sets_one_and_logs_in_with_it(
    client: TestClient, connection: Connection
) -> None:
    log_in_as(client, connection, "lin@tunelab.test")
    page = client.get("/account")
    assert 'data-testid="password-form"' in page.text
    assert 'name="current_password"' not in page.text  # none to give yet
    saved = client.post(
        "/account/password",
        data={
            "new_password": "长城长城长城 secret",
            "repeat_password": "长城长城长城 secret",
            "csrf_token": csrf(page.text),
        },
    )
    assert saved.status_code == 200
    assert 'data-testid="password-saved"' in saved.text
    assert "长城长城长城" not in saved.text  # a password never goes back into a page
    assert password_login(client, "lin@tunelab.test", "wrong password!").status_code == 401
    ok = password_login(client, "lin@tunelab.test", "长城长城长城 secret")
    assert ok.status_code == 303 and "tunelab_session" in ok.cookies
    assert "user.password_set" in audit_actions(connection, "lin@tunelab.test")


def test_changing_a_password_needs_the_current_one(
    client: TestClient, connection: Connection
) -> None:
    log_in_as(client, connection, "wang@tunelab.test")
    page = client.get("/account")
    first = {"new_password": "first password", "repeat_password": "first password"}
    client.post("/account/password", data={**first, "csrf_token": csrf(page.text)})
    page = client.get("/account")
    assert 'name="current_password"' in page.text
    refused = client.post(
        "/account/password",
        data={
            "current_password": "not it at all",
            "new_password": "second password",
            "repeat_password": "second password",
            "csrf_token": csrf(page.text),
        },
        headers=ZH,
    )
    assert refused.status_code == 422
    beside = re.search(r'data-error-for="current_password">([^<]+)<', refused.text)
    assert beside and "当前密码" in beside.group(1), refused.text
    assert password_login(client, "wang@tunelab.test", "first password").status_code == 303
    assert "user.password_changed" not in audit_actions(connection, "wang@tunelab.test")


@pytest.mark.parametrize(
    ("new", "repeat", "field"),
    [
        ("short", "short", "new_password"),
        ("long enough one", "long enough two", "repeat_password"),
    ],
)
def test_a_bad_new_password_is_refused_beside_its_field(
    client: TestClient, connection: Connection, new: str, repeat: str, field: str
) -> None:
    log_in_as(client, connection, "zhao@tunelab.test")
    page = client.get("/account")
    refused = client.post(
        "/account/password",
        data={"new_password": new, "repeat_password": repeat, "csrf_token": csrf(page.text)},
    )
    assert refused.status_code == 422
    assert f'data-error-for="{field}"' in refused.text
    with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
        user = session.scalar(select(User).where(User.email == "zhao@tunelab.test"))
        assert user is not None and user.password_hash is None  # nothing half-written


def test_the_api_sets_a_password_too(api: TestClient) -> None:
    short = api.put("/me/password", json={"new_password": "short"})
    assert short.status_code == 422
    assert short.json()["errors"][0]["field"] == "new_password"
    changed = api.put(
        "/me/password",
        json={"new_password": "管理员的新密码 2026", "current_password": ADMIN_PASSWORD},
    )
    assert changed.status_code == 204, changed.text
    wrong = api.put(
        "/me/password",
        json={"new_password": "another one here", "current_password": "guess guess"},
    )
    assert wrong.status_code == 422
    assert wrong.json()["errors"][0]["field"] == "current_password"


def test_an_admin_invites_by_a_one_time_link(client: TestClient, connection: Connection) -> None:
    log_in_as(client, connection, ADMIN_EMAIL)
    page = client.get("/admin/users")
    made = client.post(
        "/admin/invites",
        data={"email": "Xiao.Li@tunelab.test", "role": "reviewer", "csrf_token": csrf(page.text)},
    )
    assert made.status_code == 200, made.text
    link = re.search(r"<code>(http://testserver/login/link/[^<]+)</code>", made.text)
    assert link, made.text
    assert "user.invited" in audit_actions(connection, "xiao.li@tunelab.test")

    # The invitee opens it: logged in once, sent to set a password.
    client.cookies.clear()
    opened = client.get(link.group(1), follow_redirects=False)
    assert opened.status_code == 303
    assert opened.headers["location"] == "/account?welcome=1#password"
    welcome = client.get("/account?welcome=1")
    assert 'data-testid="welcome"' in welcome.text
    assert "xiao.li@tunelab.test" in welcome.text
    # The link is spent.
    client.cookies.clear()
    again = client.get(link.group(1), follow_redirects=False)
    assert again.status_code == 401
    assert "login.link_used" in audit_actions(connection, "xiao.li@tunelab.test")


def test_an_invitation_expires(client: TestClient, connection: Connection) -> None:
    log_in_as(client, connection, ADMIN_EMAIL)
    page = client.get("/admin/users")
    made = client.post(
        "/admin/invites",
        data={"email": "late@tunelab.test", "days": "1", "csrf_token": csrf(page.text)},
    )
    link = re.search(r"/login/link/([^<]+)</code>", made.text)
    assert link
    with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
        for row in session.scalars(select(LoginLink)):
            row.expires_at = utcnow() - timedelta(minutes=1)
        session.commit()
    client.cookies.clear()
    late = client.get(f"/login/link/{link.group(1)}", follow_redirects=False)
    assert late.status_code == 401
    assert "not valid any more" in late.text


def test_a_bad_invitation_keeps_the_input(client: TestClient, connection: Connection) -> None:
    log_in_as(client, connection, ADMIN_EMAIL)
    page = client.get("/admin/users")
    client.cookies.set(LOCALE_COOKIE, "zh_CN")
    refused = client.post(
        "/admin/invites",
        data={"email": "同事@例子", "role": "trainer", "days": "90", "csrf_token": csrf(page.text)},
    )
    assert refused.status_code == 422
    assert 'data-error-for="days"' in refused.text
    assert 'value="同事@例子"' in refused.text and 'value="90"' in refused.text
    # An account already in use is not invited again.
    taken = client.post(
        "/admin/invites", data={"email": ADMIN_EMAIL, "csrf_token": csrf(page.text)}
    )
    assert taken.status_code == 409
    assert f'value="{ADMIN_EMAIL}"' in taken.text


def test_the_api_invites_with_a_link(api: TestClient) -> None:
    made = api.post("/invites", json={"email": "api-invite@tunelab.test", "days": 3})
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["user"]["email"] == "api-invite@tunelab.test"
    assert "/login/link/" in body["link"]
    bad = api.post("/invites", json={"email": "x@tunelab.test", "days": 0})
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "days"


def test_the_first_start_box_lines_up_chinese_too() -> None:
    from app.cli.serve import boxed, display_width

    box = boxed(["首次启动：请用下面的一次性链接登录：", "http://127.0.0.1:8000/login/link/x"])
    lines = box.strip("\n").split("\n")
    assert len({display_width(line) for line in lines}) == 1, box
    assert lines[0].startswith("┌") and lines[-1].endswith("┘")
