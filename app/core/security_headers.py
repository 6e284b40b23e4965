"""Security headers on every HTTP response: a strict Content-Security-Policy and its companions.

A pure ASGI middleware (no BaseHTTPMiddleware): it only edits the ``http.response.start``
message, so streamed bodies, downloads and background tasks pass through untouched. A header
that the route already set (a download's own ``Content-Security-Policy``, say) is kept.

The API docs pages are the one exception to the strict policy: FastAPI's Swagger UI and ReDoc
pages load their bundles from a CDN and start Swagger UI with an inline script. Rather than
allow every inline script there, the docs response is read (a few kB of HTML), each inline
script is hashed, and the policy allows exactly those hashes.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Mapping

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)

# What FastAPI's get_swagger_ui_html / get_redoc_html pages load with their default URLs,
# checked in Chromium: Swagger UI 5 needs its bundle and CSS from jsDelivr, a favicon from
# fastapi.tiangolo.com and data: images, no inline styles and no eval; its one inline script
# is allowed by hash per response. ReDoc (styled-components) injects <style> elements at run
# time and fails without 'unsafe-inline' styles, loads Google fonts and runs its search in a
# blob: worker.
_DOCS_COMMON = "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
SWAGGER_UI_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; "
    "script-src 'self' https://cdn.jsdelivr.net; "
    "style-src 'self' https://cdn.jsdelivr.net; "
    "img-src 'self' data: https://fastapi.tiangolo.com; " + _DOCS_COMMON
)
REDOC_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; "
    "script-src 'self' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://fonts.googleapis.com; "
    "font-src 'self' https://fonts.gstatic.com; "
    "img-src 'self' data: https://fastapi.tiangolo.com; "
    "worker-src 'self' blob:; " + _DOCS_COMMON
)

# FastAPI's default docs_url, swagger_ui_oauth2_redirect_url and redoc_url.
DOCS_POLICIES: Mapping[str, str] = {
    "/docs": SWAGGER_UI_CONTENT_SECURITY_POLICY,
    "/docs/oauth2-redirect": SWAGGER_UI_CONTENT_SECURITY_POLICY,
    "/redoc": REDOC_CONTENT_SECURITY_POLICY,
}

SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}

# A docs page is a few kB; anything larger is not one of FastAPI's and gets no hashes.
_MAX_DOCS_BODY = 1024 * 1024
_INLINE_SCRIPT = re.compile(rb"<script\b(?![^>]*\bsrc\s*=)[^>]*>(.*?)</script\s*>", re.I | re.S)


def inline_script_hashes(html: bytes) -> list[str]:
    """CSP source expressions ('sha256-…') for each inline <script> in ``html``, in order."""
    hashes: list[str] = []
    for match in _INLINE_SCRIPT.finditer(html):
        digest = base64.b64encode(hashlib.sha256(match.group(1)).digest()).decode()
        source = f"'sha256-{digest}'"
        if source not in hashes:
            hashes.append(source)
    return hashes


def allow_script_hashes(policy: str, hashes: Iterable[str]) -> str:
    """``policy`` with ``hashes`` added to its script-src directive (created if missing)."""
    extra = " ".join(hashes)
    if not extra:
        return policy
    directives = [d.strip() for d in policy.split(";") if d.strip()]
    for index, directive in enumerate(directives):
        if directive.split()[0].lower() == "script-src":
            directives[index] = f"{directive} {extra}"
            break
    else:
        directives.append(f"script-src {extra}")
    return "; ".join(directives)


class SecurityHeadersMiddleware:
    """Add ``SECURITY_HEADERS`` to every HTTP response that does not already carry them.

    The paths in ``docs_policies`` get their own Content-Security-Policy (plus hashes of the
    page's inline scripts) instead of the strict one; pass policies without the CDN hosts once
    the docs assets are served from this app.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        headers: Mapping[str, str] = SECURITY_HEADERS,
        docs_policies: Mapping[str, str] = DOCS_POLICIES,
    ) -> None:
        self.app = app
        self.headers = dict(headers)
        self.docs_policies = dict(docs_policies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs_policy = self.docs_policies.get(_route_path(scope))
        if docs_policy is not None:
            await self._docs_page(scope, receive, send, docs_policy)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                self._add(message, self.headers)
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _docs_page(self, scope: Scope, receive: Receive, send: Send, policy: str) -> None:
        # The policy depends on the body (its inline scripts), so the start message waits
        # until the whole body is in; non-HTML or oversized responses go out with no hashes.
        start: Message | None = None
        chunks: list[bytes] = []
        size = 0

        async def flush(hashes: list[str]) -> None:
            nonlocal start
            assert start is not None
            with_hashes = allow_script_hashes(policy, hashes)
            self._add(start, {**self.headers, "Content-Security-Policy": with_hashes})
            await send(start)
            start = None
            if chunks:
                await send(
                    {"type": "http.response.body", "body": b"".join(chunks), "more_body": True}
                )
                chunks.clear()

        async def buffer_body(message: Message) -> None:
            nonlocal start, size
            if message["type"] == "http.response.start":
                start = message
                content_type = MutableHeaders(scope=message).get("content-type", "")
                if not content_type.startswith("text/html"):
                    await flush([])
                return
            if message["type"] != "http.response.body":  # e.g. trailers or pathsend
                if start is not None:
                    await flush([])
                await send(message)
                return
            if start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if message.get("more_body", False):
                if size > _MAX_DOCS_BODY:
                    await flush([])
                return
            body = b"".join(chunks)
            chunks.clear()
            await flush(inline_script_hashes(body))
            await send({"type": "http.response.body", "body": body, "more_body": False})

        await self.app(scope, receive, buffer_body)

    @staticmethod
    def _add(start: Message, wanted: Mapping[str, str]) -> None:
        headers = MutableHeaders(scope=start)
        for name, value in wanted.items():
            if name not in headers:  # case-insensitive: a route's own header wins
                headers.append(name, value)


def _route_path(scope: Scope) -> str:
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    # Starlette keeps the mount prefix in "path"; compare the part the app's routes see.
    if root and path.startswith(root):
        path = path[len(root) :]
    return path.rstrip("/") or "/"
