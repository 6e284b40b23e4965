"""The security model: every route has a rule, ids do not leak across projects, credentials
are checked the way the README ("Accounts and security") says. Real HTTP against the cluster server."""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from sqlalchemy import update

from app.api.deps import Rule
from app.core.config import get_settings
from app.core.db import get_sessionmaker, utcnow
from app.main import app
from app.models import ApiToken
from tests.conftest import ADMIN_PASSWORD
from tests.factories import (
    alpaca_records,
    create_dataset,
    create_project,
    jsonl,
    start_job,
    tiny_config,
    upload,
    wait_for_status,
)
from tests.live import LiveServer, api_client

ROLES = ("admin", "trainer", "reviewer")


@dataclass
class RouteInfo:
    path: str
    methods: set[str]
    dependant: Any


def all_routes() -> list[RouteInfo]:
    """Every API and page route with its full path. FastAPI 0.16x keeps included routers as
    objects rather than copying their routes into the app, so both shapes are walked."""
    found: list[RouteInfo] = []
    for route in app.routes:
        if isinstance(route, APIRoute):
            found.append(RouteInfo(route.path, set(route.methods), route.dependant))
        elif hasattr(route, "effective_route_contexts"):
            for ctx in route.effective_route_contexts():
                found.append(RouteInfo(ctx.path, set(ctx.methods or ()), ctx.dependant))
    assert len(found) > 30, "route discovery found too few routes"
    return found


def route_rule(route: RouteInfo) -> Rule | None:
    """The access rule a route declares, found among its dependencies."""
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        if isinstance(dep.call, Rule):
            return dep.call
        stack.extend(dep.dependencies)
    return None


def test_every_route_declares_who_may_call_it() -> None:
    missing = [f"{sorted(r.methods)} {r.path}" for r in all_routes() if route_rule(r) is None]
    assert missing == [], "routes without an access rule (add CurrentUser/CurrentTrainer/…)"


FRAMEWORK_ROUTES = {"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/static"}


def test_the_only_routes_outside_the_rules_are_the_docs_and_static_files() -> None:
    others = {
        r.path
        for r in app.routes
        if not isinstance(r, APIRoute) and not hasattr(r, "effective_route_contexts")
    }
    assert others <= FRAMEWORK_ROUTES, others - FRAMEWORK_ROUTES


def make_user(api: httpx.Client, role: str) -> dict[str, Any]:
    email = f"{role}-{uuid.uuid4().hex[:8]}@tunelab.test"
    user = api.post("/users", json={"email": email, "role": role, "password": "long enough pw"})
    assert user.status_code == 201, user.text
    return user.json()


def token_for(cluster: LiveServer, email: str, scopes: str = "read,write") -> str:
    import os

    from tests.live import cli_token

    return cli_token(email, dict(os.environ), scopes=scopes)


@pytest.fixture(scope="module")
def clients(cluster: LiveServer, admin_token: str) -> dict[str, httpx.Client]:
    out: dict[str, httpx.Client] = {}
    with httpx.Client(
        base_url=cluster.url + "/api/v1", headers={"Authorization": f"Bearer {admin_token}"}
    ) as admin_api:
        for role in ("trainer", "reviewer"):
            user = make_user(admin_api, role)
            secret = token_for(cluster, user["email"])
            out[role] = httpx.Client(
                base_url=cluster.url, timeout=30, headers={"Authorization": f"Bearer {secret}"}
            )
    out["admin"] = httpx.Client(
        base_url=cluster.url, timeout=30, headers={"Authorization": f"Bearer {admin_token}"}
    )
    out["anonymous"] = httpx.Client(base_url=cluster.url, timeout=30)
    return out


def call(client: httpx.Client, route: RouteInfo, method: str) -> httpx.Response:
    path = re.sub(r"\{[^}]+\}", lambda _: str(uuid.uuid4()), route.path)
    kwargs: dict[str, Any] = {}
    if method in ("POST", "PUT", "PATCH"):
        kwargs["json"] = {}
    return client.request(method, path, follow_redirects=False, **kwargs)


def test_route_role_matrix(clients: dict[str, httpx.Client]) -> None:
    """Each role gets exactly what each route's rule says, on every route of the app."""
    problems = []
    for route in all_routes():
        rule = route_rule(route)
        assert rule is not None
        for method in sorted(route.methods - {"HEAD"}):
            if route.path in ("/login/link/{secret}",):
                continue  # would spend nothing, but covered by its own tests
            for role, client in clients.items():
                status = call(client, route, method).status_code
                is_page = not route.path.startswith("/api/")
                if rule.scope is None:
                    ok = status not in (401, 403) or route.path == "/login"
                elif role == "anonymous":
                    ok = status == 401 or (is_page and status == 303)
                elif rule.roles is not None and role not in rule.roles:
                    ok = status == 403
                else:
                    ok = status not in (401, 403)
                if not ok:
                    problems.append(f"{method} {route.path} as {role}: {status} ({rule.name})")
    assert problems == []


@pytest.fixture(scope="module")
def scoped_clients(cluster: LiveServer, admin_token: str) -> dict[str, httpx.Client]:
    """The admin through tokens of each scope: what a token allows is its scope, not its
    owner's role."""
    from tests.conftest import ADMIN_EMAIL

    return {
        scopes: httpx.Client(
            base_url=cluster.url,
            timeout=30,
            headers={"Authorization": f"Bearer {token_for(cluster, ADMIN_EMAIL, scopes)}"},
        )
        for scopes in ("read", "read,write", "read,write,admin")
    }


def test_route_scope_matrix(scoped_clients: dict[str, httpx.Client]) -> None:
    """A token reaches exactly the routes its scope allows, token routes included."""
    from app.services.accounts.credentials import expand_scopes

    problems = []
    for route in all_routes():
        rule = route_rule(route)
        assert rule is not None
        if rule.scope is None or route.path in ("/login/link/{secret}",):
            continue
        for method in sorted(route.methods - {"HEAD"}):
            for scopes, client in scoped_clients.items():
                status = call(client, route, method).status_code
                allowed = rule.scope in expand_scopes(scopes.split(","))
                if allowed != (status not in (401, 403)):
                    problems.append(f"{method} {route.path} with {scopes}: {status} ({rule.name})")
    assert problems == []


def test_a_read_token_can_neither_mint_nor_revoke_tokens(
    api: httpx.Client, cluster: LiveServer
) -> None:
    read_only = api.post("/tokens", json={"name": "ro", "scopes": ["read"]}).json()
    victim = api.post("/tokens", json={"name": "victim", "scopes": ["read"]}).json()
    with api_client(cluster.url, read_only["token"]) as ro:
        minted = ro.post("/tokens", json={"name": "x", "scopes": ["read", "write"]})
        assert minted.status_code == 403, minted.text
        assert "write" in minted.json()["detail"]
        assert ro.post(f"/tokens/{victim['id']}/revoke").status_code == 403
        assert ro.post(f"/tokens/{read_only['id']}/revoke").status_code == 403
    names = {t["name"]: t for t in api.get("/tokens").json()}
    assert "x" not in names
    assert names["victim"]["revoked_at"] is None


def test_a_token_never_grants_more_than_the_token_that_made_it(
    api: httpx.Client, cluster: LiveServer
) -> None:
    writer = api.post("/tokens", json={"name": "w", "scopes": ["read", "write"]}).json()["token"]
    with api_client(cluster.url, writer) as w:
        refused = w.post("/tokens", json={"name": "escalate", "scopes": ["admin"]})
        assert refused.status_code == 403
        assert "admin" in refused.json()["detail"]
        ok = w.post("/tokens", json={"name": "narrower", "scopes": ["read"]})
        assert ok.status_code == 201
        assert ok.json()["scopes"] == ["read"]


def test_revoking_another_users_token_needs_the_admin_scope(
    api: httpx.Client, cluster: LiveServer
) -> None:
    trainer = make_user(api, "trainer")
    with api_client(cluster.url, token_for(cluster, trainer["email"])) as own:
        theirs = own.post("/tokens", json={"name": "theirs", "scopes": ["read"]}).json()
        # Another trainer's token is not found, as if it did not exist.
        other = make_user(api, "trainer")
        with api_client(cluster.url, token_for(cluster, other["email"])) as stranger:
            assert stranger.post(f"/tokens/{theirs['id']}/revoke").status_code == 404
    from tests.conftest import ADMIN_EMAIL

    admin_write = token_for(cluster, ADMIN_EMAIL, "read,write")
    with api_client(cluster.url, admin_write) as admin:
        assert admin.post(f"/tokens/{theirs['id']}/revoke").status_code == 404
    assert api.post(f"/tokens/{theirs['id']}/revoke").json()["revoked_at"]


def test_cross_project_access_by_id_is_404_for_every_resource(
    api: httpx.Client, cluster: LiveServer, tiny_model: Path
) -> None:
    project = create_project(api)
    dataset = create_dataset(api, project["id"], alpaca_records(4))
    job = start_job(api, project["id"], dataset["id"], tiny_config(tiny_model, max_steps=1))
    assert wait_for_status(api, job["id"])["status"] == "succeeded"
    artifact = api.get(f"/jobs/{job['id']}/artifacts").json()[0]
    staged = api.post(
        f"/projects/{project['id']}/uploads",
        files={"file": ("t.jsonl", jsonl(alpaca_records(2)), "application/octet-stream")},
    ).json()
    version = f"/api/v1/datasets/{dataset['id']}/versions/1"

    outsider = make_user(api, "trainer")
    secret = token_for(cluster, outsider["email"])
    with httpx.Client(base_url=cluster.url, headers={"Authorization": f"Bearer {secret}"}) as other:
        for path in (
            f"/api/v1/projects/{project['id']}",
            f"/api/v1/projects/{project['id']}/datasets",
            f"/api/v1/projects/{project['id']}/members",
            f"/api/v1/datasets/{dataset['id']}",
            f"/api/v1/projects/{project['id']}/uploads",
            f"/api/v1/uploads/{staged['id']}",
            f"/api/v1/uploads/{staged['id']}/errors.csv",
            version,
            f"{version}/records",
            f"{version}/stats",
            f"{version}/preview?tokenizer=qwen3",
            f"{version}/download",
            f"/uploads/{staged['id']}",
            f"/datasets/{dataset['id']}",
            f"/datasets/{dataset['id']}/versions/1/preview",
            f"/api/v1/jobs/{job['id']}",
            f"/api/v1/jobs/{job['id']}/events",
            f"/api/v1/jobs/{job['id']}/metrics",
            f"/api/v1/jobs/{job['id']}/artifacts",
            f"/api/v1/artifacts/{artifact['id']}/download",
            f"/projects/{project['id']}",
            f"/jobs/{job['id']}",
        ):
            assert other.get(path).status_code == 404, path
        assert other.post(f"/api/v1/jobs/{job['id']}/cancel").status_code == 404
        assert other.post(f"/api/v1/uploads/{staged['id']}/import", json={}).status_code == 404
        assert other.delete(f"/api/v1/uploads/{staged['id']}").status_code == 404
        for action in ("clean", "split"):
            assert other.post(f"{version}/{action}", json={}).status_code == 404
        refused = other.post(
            "/api/v1/jobs",
            json={
                "project_id": project["id"],
                "dataset_id": dataset["id"],
                "config": tiny_config(tiny_model),
            },
        )
        assert refused.status_code == 404
        assert upload(other, project["id"], jsonl(alpaca_records(2))).status_code == 404  # type: ignore[arg-type]
        listed = other.get("/api/v1/projects").json()
        assert project["id"] not in [p["id"] for p in listed["items"]]
        assert other.get("/api/v1/jobs").json()["total"] == 0

        # Once added as a member, the same user sees it.
        api.post(f"/projects/{project['id']}/members", json={"email": outsider["email"]})
        assert other.get(f"/api/v1/projects/{project['id']}").status_code == 200


def test_reviewer_cannot_start_a_job(
    api: httpx.Client, cluster: LiveServer, tiny_model: Path
) -> None:
    project = create_project(api)
    dataset = create_dataset(api, project["id"], alpaca_records(2))
    reviewer = make_user(api, "reviewer")
    secret = token_for(cluster, reviewer["email"])
    response = httpx.post(
        f"{cluster.url}/api/v1/jobs",
        headers={"Authorization": f"Bearer {secret}"},
        json={
            "project_id": project["id"],
            "dataset_id": dataset["id"],
            "config": tiny_config(tiny_model),
        },
    )
    assert response.status_code == 403


def test_revoked_and_expired_tokens_are_refused(api: httpx.Client, cluster: LiveServer) -> None:
    created = api.post("/tokens", json={"name": "short-lived", "scopes": ["read"]}).json()
    auth = {"Authorization": f"Bearer {created['token']}"}
    assert httpx.get(f"{cluster.url}/api/v1/me", headers=auth).status_code == 200
    listed = api.get("/tokens").json()
    assert created["token"] not in str(listed), "a token's secret is shown once only"

    with get_sessionmaker()() as session:
        session.execute(
            update(ApiToken)
            .where(ApiToken.id == created["id"])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        session.commit()
    # Changed by this process, not the server's: the server's memory of checked tokens
    # (app.services.accounts.token_cache) lets it through for token_cache_seconds at most.
    changed = time.monotonic()
    while httpx.get(f"{cluster.url}/api/v1/me", headers=auth).status_code != 401:
        assert time.monotonic() - changed < get_settings().token_cache_seconds + 1
        time.sleep(0.2)

    other = api.post("/tokens", json={"name": "to revoke", "scopes": ["read"]}).json()
    auth = {"Authorization": f"Bearer {other['token']}"}
    assert httpx.get(f"{cluster.url}/api/v1/me", headers=auth).status_code == 200
    assert api.post(f"/tokens/{other['id']}/revoke").json()["revoked_at"]
    assert httpx.get(f"{cluster.url}/api/v1/me", headers=auth).status_code == 401
    garbage = {"Authorization": "Bearer tl_not-a-token"}
    assert httpx.get(f"{cluster.url}/api/v1/me", headers=garbage).status_code == 401


def test_read_token_cannot_write(api: httpx.Client, cluster: LiveServer) -> None:
    read_only = api.post("/tokens", json={"name": "ro", "scopes": ["read"]}).json()["token"]
    response = httpx.post(
        f"{cluster.url}/api/v1/projects",
        json={"name": "x"},
        headers={"Authorization": f"Bearer {read_only}"},
    )
    assert response.status_code == 403
    assert "write" in response.json()["detail"]


def browser_login(cluster: LiveServer, email: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=cluster.url, timeout=30)
    form = client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
    response = client.post(
        "/login",
        data={"email": email, "password": password, "csrf_token": csrf},
    )
    assert response.status_code == 303, response.text
    return client


def test_forms_without_the_csrf_token_are_refused(cluster: LiveServer) -> None:
    from tests.conftest import ADMIN_EMAIL

    client = browser_login(cluster, ADMIN_EMAIL, ADMIN_PASSWORD)
    page = client.get("/projects")
    assert page.status_code == 200
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    refused = client.post("/projects", data={"name": "no token"}, follow_redirects=False)
    assert refused.status_code == 403
    wrong = client.post(
        "/projects", data={"name": "bad", "csrf_token": "x" * 43}, follow_redirects=False
    )
    assert wrong.status_code == 403
    accepted = client.post(
        "/projects", data={"name": "with token", "csrf_token": csrf}, follow_redirects=False
    )
    assert accepted.status_code == 303
    htmx = client.post(
        "/api/v1/projects", json={"name": "htmx style"}, headers={"X-CSRF-Token": csrf}
    )
    assert htmx.status_code == 201
    no_header = client.post("/api/v1/projects", json={"name": "cross-site"})
    assert no_header.status_code == 403
    # Logging out ends the session on the server, not just in the browser.
    cookie = client.cookies.get("tunelab_session")
    assert (
        client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False).status_code == 303
    )
    stale = httpx.get(f"{cluster.url}/api/v1/me", cookies={"tunelab_session": cookie or ""})
    assert stale.status_code == 401


def test_csrf_is_checked_whatever_the_content_type(api: httpx.Client, cluster: LiveServer) -> None:
    """Multipart forms, plain text and other methods from a session need the token too."""
    from tests.conftest import ADMIN_EMAIL

    client = browser_login(cluster, ADMIN_EMAIL, ADMIN_PASSWORD)
    csrf = re.search(  # type: ignore[union-attr]
        r'name="csrf_token" value="([^"]+)"', client.get("/projects").text
    ).group(1)
    name = f"multipart {uuid.uuid4().hex[:6]}"
    multipart = {"name": (None, name)}
    before = {p["name"] for p in api.get("/projects", params={"limit": 200}).json()["items"]}
    assert client.post("/projects", files=multipart, follow_redirects=False).status_code == 403
    assert client.post("/account/tokens", files={"name": (None, "minted")}).status_code == 403, (
        "a token minted by a cross-site multipart form"
    )
    as_text = client.post(
        "/api/v1/projects", content='{"name": "x"}', headers={"content-type": "text/plain"}
    )
    assert as_text.status_code == 403
    assert client.request("PATCH", "/api/v1/users/" + str(uuid.uuid4()), json={}).status_code == 403
    after = {p["name"] for p in api.get("/projects", params={"limit": 200}).json()["items"]}
    assert after == before
    assert "minted" not in {t["name"] for t in api.get("/tokens").json()}
    # The same multipart form with the field is accepted, so browsers that send files work.
    ok = client.post(
        "/projects", files={**multipart, "csrf_token": (None, csrf)}, follow_redirects=False
    )
    assert ok.status_code == 303
    # A streamed upload checks the field as the body arrives, and keeps nothing without it.
    project = create_project(api)
    upload = client.post(
        f"/api/v1/projects/{project['id']}/uploads",
        files={"file": ("a.jsonl", jsonl(alpaca_records(2)), "application/jsonl")},
    )
    assert upload.status_code == 403
    assert api.get(f"/projects/{project['id']}/uploads").json()["total"] == 0


def test_eleventh_wrong_password_in_a_minute_is_refused(
    api: httpx.Client, cluster: LiveServer
) -> None:
    user = make_user(api, "trainer")
    client = httpx.Client(base_url=cluster.url, timeout=30)
    statuses = []
    for _ in range(11):
        form = client.get("/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
        statuses.append(
            client.post(
                "/login",
                data={"email": user["email"], "password": "wrong password", "csrf_token": csrf},
            ).status_code
        )
    assert statuses[:10] == [401] * 10
    assert statuses[10] == 429
    form = client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
    right = client.post(
        "/login", data={"email": user["email"], "password": "long enough pw", "csrf_token": csrf}
    )
    assert right.status_code == 429, "even the right password waits out the minute"
    actions = [e["action"] for e in api.get("/audit", params={"limit": 50}).json()["items"]]
    assert "login.throttled" in actions and "login.failed" in actions


def test_hostile_file_names_and_contents_leave_nothing_behind(
    api: httpx.Client, cluster: LiveServer
) -> None:
    import os

    data_dir = Path(os.environ["TUNELAB_DATA_DIR"])
    before = {p for p in data_dir.rglob("*") if p.is_file() and "logs" not in p.parts}
    project = create_project(api)
    html = b"<!doctype html><html><script>alert(1)</script></html>"
    for name, content in (
        ("../../etc/passwd", b""),
        ("page.jsonl", html),
        ("..\\..\\evil.jsonl", b"\x00\x01"),
    ):
        response = upload(api, project["id"], content, filename=name)
        assert 400 <= response.status_code < 500, (name, response.status_code)
    after = {p for p in data_dir.rglob("*") if p.is_file() and "logs" not in p.parts}
    assert after - before == set()

    # A name of this run's own: a file of a common name (/tmp/x.jsonl) may exist for any
    # other reason on the machine.
    name = f"traversal-{uuid.uuid4().hex[:8]}.jsonl"
    good = upload(api, project["id"], jsonl(alpaca_records(2)), filename=f"../../{name}")
    assert good.status_code == 201
    assert good.json()["versions"][0]["original_filename"] == name
    assert not (data_dir.parent / name).exists()


def test_storage_quota_is_enforced_per_user(api: httpx.Client, cluster: LiveServer) -> None:
    user = make_user(api, "trainer")
    assert api.patch(f"/users/{user['id']}", json={"storage_quota_bytes": 300}).status_code == 200
    secret = token_for(cluster, user["email"])
    with httpx.Client(
        base_url=cluster.url + "/api/v1", headers={"Authorization": f"Bearer {secret}"}
    ) as mine:
        project = mine.post("/projects", json={"name": "quota"}).json()
        assert upload(mine, project["id"], jsonl(alpaca_records(2))).status_code == 201
        over = upload(mine, project["id"], jsonl(alpaca_records(6, start=10)))
        assert over.status_code == 413 and "quota" in over.json()["detail"]


def test_stored_script_in_names_and_data_renders_as_text(
    api: httpx.Client, cluster: LiveServer
) -> None:
    payload = "<script>alert('x')</script>"
    project = create_project(api, name=payload, domain=payload)
    records = [{"instruction": payload, "input": "", "output": payload}] * 2
    upload(api, project["id"], jsonl(records), filename=f"{payload}.jsonl")
    page = api.get(f"{cluster.url}/projects/{project['id']}")
    assert payload not in page.text
    assert "&lt;script&gt;" in page.text


def test_audit_log_records_token_and_role_changes(api: httpx.Client) -> None:
    user = make_user(api, "trainer")
    api.patch(f"/users/{user['id']}", json={"role": "reviewer"})
    token = api.post("/tokens", json={"name": "audited", "scopes": ["read"]}).json()
    api.post(f"/tokens/{token['id']}/revoke")
    actions = {e["action"] for e in api.get("/audit", params={"limit": 100}).json()["items"]}
    assert {"user.created", "user.role_changed", "token.created", "token.revoked"} <= actions


def test_users_cannot_grant_themselves_remote_code(api: httpx.Client, tiny_model: Path) -> None:
    project = create_project(api)
    dataset = create_dataset(api, project["id"], alpaca_records(2))
    response = api.post(
        "/jobs",
        json={
            "project_id": project["id"],
            "dataset_id": dataset["id"],
            "config": tiny_config(tiny_model, trust_remote_code=True),
        },
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "config.trust_remote_code"


def test_a_reviewer_lands_on_their_review_queue_and_sees_no_project(
    api: httpx.Client, cluster: LiveServer
) -> None:
    reviewer = make_user(api, "reviewer")
    client = browser_login(cluster, reviewer["email"], "long enough pw")
    home = client.get("/", follow_redirects=False)
    assert home.headers["location"] == "/reviews"
    assert client.get("/projects").status_code == 403
    assert client.get("/api/v1/projects").status_code == 403
    assert client.get("/account").status_code == 200
    assert client.get("/reviews").status_code == 200


def test_members_can_be_added_from_the_project_page(api: httpx.Client, cluster: LiveServer) -> None:
    from tests.conftest import ADMIN_EMAIL

    colleague = make_user(api, "trainer")
    client = browser_login(cluster, ADMIN_EMAIL, ADMIN_PASSWORD)
    project = create_project(api, name="shared")
    page = client.get(f"/projects/{project['id']}")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    added = client.post(
        f"/projects/{project['id']}/members",
        data={"email": colleague["email"], "csrf_token": csrf},
        follow_redirects=True,
    )
    assert added.status_code == 200 and colleague["email"] in added.text
    unknown = client.post(
        f"/projects/{project['id']}/members",
        data={"email": "nobody@tunelab.test", "csrf_token": csrf},
    )
    assert unknown.status_code == 422


def test_an_admin_cannot_lock_themselves_out(api: httpx.Client) -> None:
    me = api.get("/me").json()
    assert api.patch(f"/users/{me['id']}", json={"is_active": False}).status_code == 409
    assert api.patch(f"/users/{me['id']}", json={"role": "trainer"}).status_code == 409
    assert api.get("/me").json()["role"] == "admin"


def test_an_admin_can_allow_remote_code_for_one_named_model(
    api: httpx.Client, cluster: LiveServer, tiny_model: Path
) -> None:
    project = create_project(api)
    dataset = create_dataset(api, project["id"], alpaca_records(2))
    granted = api.put(
        "/model-permissions", json={"model": str(tiny_model), "trust_remote_code": True}
    )
    assert granted.status_code == 200
    job = api.post(
        "/jobs",
        json={
            "project_id": project["id"],
            "dataset_id": dataset["id"],
            "config": tiny_config(tiny_model, trust_remote_code=True, max_steps=1),
        },
    )
    assert job.status_code == 201, job.text
    assert job.json()["config"]["trust_remote_code"] is True
    assert wait_for_status(api, job.json()["id"])["status"] == "succeeded"
    page = api.get(f"{cluster.url}/admin/models")
    assert str(tiny_model) in page.text
    api.put("/model-permissions", json={"model": str(tiny_model)})  # back to the safe default
