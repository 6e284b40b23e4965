"""SecurityHeadersMiddleware on a small Starlette app of its own (not tunelab's)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator

import pytest
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route
from starlette.testclient import TestClient

from app.core.security_headers import (
    CONTENT_SECURITY_POLICY,
    REDOC_CONTENT_SECURITY_POLICY,
    SECURITY_HEADERS,
    SecurityHeadersMiddleware,
    allow_script_hashes,
    inline_script_hashes,
)

STRICT_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)


def page(request: Request) -> Response:
    return HTMLResponse("<!doctype html><p>hello</p>")


def download(request: Request) -> Response:
    return Response(
        b"PK\x03\x04",
        media_type="application/zip",
        headers={
            "content-security-policy": "sandbox",
            "X-Frame-Options": "SAMEORIGIN",
            "Content-Disposition": 'attachment; filename="adapter.zip"',
        },
    )


def stream(request: Request) -> Response:
    async def parts() -> AsyncIterator[bytes]:
        for part in (b"one ", b"two ", b"three"):
            yield part

    return StreamingResponse(parts(), media_type="text/plain")


def swagger(request: Request) -> Response:
    return get_swagger_ui_html(openapi_url="/openapi.json", title="tunelab - Swagger UI")


def redoc(request: Request) -> Response:
    return get_redoc_html(openapi_url="/openapi.json", title="tunelab - ReDoc")


def oauth2_redirect(request: Request) -> Response:
    return get_swagger_ui_oauth2_redirect_html()


def streamed_docs(request: Request) -> Response:
    async def parts() -> AsyncIterator[bytes]:
        yield b"<html><script>let a = 1;</script>"
        yield b"<script src='/x.js'></script><script>let b = 2;</script></html>"

    return StreamingResponse(parts(), media_type="text/html")


def forbidden(request: Request) -> Response:
    raise HTTPException(403, "not yours")


def build_app(**options: object) -> Starlette:
    app = Starlette(
        routes=[
            Route("/", page),
            Route("/download", download),
            Route("/stream", stream),
            Route("/docs", swagger),
            Route("/redoc", redoc),
            Route("/docs/oauth2-redirect", oauth2_redirect),
            Route("/docsearch", page),
            Route("/forbidden", forbidden),
        ]
    )
    app.add_middleware(SecurityHeadersMiddleware, **options)  # type: ignore[arg-type]
    return app


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(build_app())


def sha256_source(script: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"


def directive(policy: str, name: str) -> list[str]:
    for part in policy.split(";"):
        words = part.split()
        if words and words[0] == name:
            return words[1:]
    raise AssertionError(f"{name} not in {policy!r}")


def test_every_page_gets_the_strict_policy_and_its_companions(client: TestClient) -> None:
    response = client.get("/")
    assert response.headers["content-security-policy"] == STRICT_CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "same-origin"
    assert response.headers["cross-origin-opener-policy"] == "same-origin"
    assert response.headers["permissions-policy"] == "camera=(), microphone=(), geolocation=()"
    assert CONTENT_SECURITY_POLICY == STRICT_CSP


def test_error_responses_get_the_headers_too(client: TestClient) -> None:
    missing = client.get("/no-such-page")
    assert missing.status_code == 404
    assert missing.headers["content-security-policy"] == STRICT_CSP
    refused = client.get("/forbidden")
    assert refused.status_code == 403
    assert refused.headers["x-content-type-options"] == "nosniff"


def test_a_header_the_route_set_is_kept_not_doubled(client: TestClient) -> None:
    response = client.get("/download")
    assert response.headers.get_list("content-security-policy") == ["sandbox"]
    assert response.headers.get_list("x-frame-options") == ["SAMEORIGIN"]
    assert response.headers["content-disposition"] == 'attachment; filename="adapter.zip"'
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.content == b"PK\x03\x04"


def test_streamed_responses_pass_through_whole(client: TestClient) -> None:
    response = client.get("/stream")
    assert response.text == "one two three"
    assert response.headers["content-security-policy"] == STRICT_CSP


def test_swagger_ui_may_run_only_its_own_inline_script_and_the_cdn_bundle(
    client: TestClient,
) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    html = response.text
    inline = html.split("<script>", 1)[1].split("</script>", 1)[0]
    assert "SwaggerUIBundle(" in inline
    policy = response.headers["content-security-policy"]
    scripts = directive(policy, "script-src")
    assert scripts == ["'self'", "https://cdn.jsdelivr.net", sha256_source(inline)]
    assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy
    assert directive(policy, "style-src") == ["'self'", "https://cdn.jsdelivr.net"]
    assert directive(policy, "frame-ancestors") == ["'none'"]
    assert directive(policy, "object-src") == ["'none'"]
    # The body is untouched, so the hash matches what the browser receives.
    assert response.headers["content-length"] == str(len(response.content))
    assert response.headers["x-frame-options"] == "DENY"


def test_redoc_gets_the_docs_policy_without_script_hashes(client: TestClient) -> None:
    response = client.get("/redoc")
    policy = response.headers["content-security-policy"]
    assert policy == REDOC_CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" in directive(policy, "style-src")  # styled-components
    assert "'unsafe-inline'" not in directive(policy, "script-src")
    assert "https://fonts.googleapis.com" in directive(policy, "style-src")
    assert directive(policy, "worker-src") == ["'self'", "blob:"]


def test_oauth2_redirect_page_may_run_its_inline_script(client: TestClient) -> None:
    response = client.get("/docs/oauth2-redirect")
    scripts = directive(response.headers["content-security-policy"], "script-src")
    assert len(scripts) == 3 and scripts[2].startswith("'sha256-")


def test_a_path_that_only_starts_like_docs_stays_strict(client: TestClient) -> None:
    assert client.get("/docsearch").headers["content-security-policy"] == STRICT_CSP


def test_docs_hashes_cover_every_inline_script_of_a_streamed_page() -> None:
    app = Starlette(routes=[Route("/docs", streamed_docs)])
    app.add_middleware(SecurityHeadersMiddleware)
    response = TestClient(app).get("/docs")
    assert response.text.endswith("let b = 2;</script></html>")
    scripts = directive(response.headers["content-security-policy"], "script-src")
    assert scripts[2:] == [sha256_source("let a = 1;"), sha256_source("let b = 2;")]


def test_self_hosted_docs_policy_can_replace_the_cdn_one() -> None:
    policy = "default-src 'self'; script-src 'self'; style-src 'self'"
    client = TestClient(build_app(docs_policies={"/docs": policy}))
    scripts = directive(client.get("/docs").headers["content-security-policy"], "script-src")
    assert scripts[0] == "'self'" and len(scripts) == 2
    assert client.get("/").headers["content-security-policy"] == STRICT_CSP
    assert client.get("/redoc").headers["content-security-policy"] == STRICT_CSP


def test_docs_paths_are_matched_below_a_root_path() -> None:
    client = TestClient(build_app(), root_path="/tunelab")
    response = client.get("/tunelab/docs")
    assert "https://cdn.jsdelivr.net" in response.headers["content-security-policy"]
    assert client.get("/tunelab/").headers["content-security-policy"] == STRICT_CSP


def test_lifespan_and_plain_json_routes_still_work() -> None:
    app = Starlette(routes=[Route("/j", lambda r: JSONResponse({"ok": True}))])
    app.add_middleware(SecurityHeadersMiddleware)
    with TestClient(app) as client:  # runs the lifespan through the middleware
        response = client.get("/j")
    assert response.json() == {"ok": True}
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value


def test_inline_script_hashes_skip_external_scripts() -> None:
    html = b'<script src="/a.js"></script><SCRIPT type="module">go()</SCRIPT>'
    assert inline_script_hashes(html) == [sha256_source("go()")]


def test_hashes_are_added_to_script_src_or_create_it() -> None:
    assert allow_script_hashes("default-src 'self'; script-src 'self'", ["'sha256-x'"]) == (
        "default-src 'self'; script-src 'self' 'sha256-x'"
    )
    assert allow_script_hashes("default-src 'self'", ["'sha256-x'"]) == (
        "default-src 'self'; script-src 'sha256-x'"
    )
    assert allow_script_hashes("default-src 'self'", []) == "default-src 'self'"
