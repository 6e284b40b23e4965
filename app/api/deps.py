"""Dependencies shared by the JSON API and the pages, as ``Annotated`` aliases.

Every route names one access rule in its signature (``CurrentTrainer``, ``CurrentAdmin``,
``Public`` …); a test walks the app's routes and fails on any route without one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Query, Request
from sqlalchemy.orm import Session

from app.core.config import Settings, get_settings
from app.core.db import get_sessionmaker
from app.core.errors import Forbidden, Unauthorized
from app.core.security import same
from app.models import Role
from app.services import credentials
from app.services.access import Principal

SESSION_COOKIE = "tunelab_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


def get_session() -> Iterator[Session]:
    # Routes commit explicitly: work that must follow a commit (enqueueing a job) stays visible
    # in the route, and anything left uncommitted by an error is rolled back here.
    session = get_sessionmaker()()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
Limit = Annotated[int, Query(ge=1, le=200, description="page size")]
# Bounded so that no value overflows the database's integers (a 500 instead of a 422).
Offset = Annotated[int, Query(ge=0, le=2**31 - 1, description="items to skip")]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


class Rule:
    """An access rule: a FastAPI dependency that authenticates the caller and checks it.

    ``scope`` is what an API token must carry (admin ⊃ write ⊃ read); ``roles`` are the user
    roles allowed. A browser session carries every scope of its user's role, and its unsafe
    requests must bring the session's CSRF token (header or form field).
    """

    def __init__(self, name: str, *, scope: str | None, roles: frozenset[Role] | None) -> None:
        self.name = name
        self.scope = scope
        self.roles = roles

    def __repr__(self) -> str:
        return f"Rule({self.name})"

    async def __call__(self, request: Request, session: SessionDep) -> Principal | None:
        if self.scope is None:
            return None
        principal = await authenticate(request, session)
        if principal is None:
            raise Unauthorized("log in or send an API token (Authorization: Bearer …)")
        if self.scope not in principal.scopes:
            raise Forbidden(f"this needs a token with the `{self.scope}` scope")
        if self.roles is not None and principal.user.role not in self.roles:
            raise Forbidden(f"your role ({principal.user.role}) may not do this")
        request.state.principal = principal
        return principal


async def authenticate(request: Request, session: Session) -> Principal | None:
    """The caller from a Bearer token or the session cookie, CSRF checked for the latter."""
    header = request.headers.get("authorization", "")
    if header:
        kind, _, secret = header.partition(" ")
        if kind.lower() != "bearer" or not secret:
            raise Unauthorized("send the API token as `Authorization: Bearer <token>`")
        found = credentials.token_for_secret(session, secret=secret.strip())
        if found is None:
            raise Unauthorized("the API token is not valid (unknown, revoked or expired)")
        token, user = found
        return Principal(
            user=user,
            scopes=credentials.expand_scopes(token.scopes),
            via="token",
            ip=client_ip(request),
            token_id=token.id,
        )
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    web = credentials.session_for_cookie(session, cookie=cookie)
    if web is None:
        return None
    web_session, user = web
    scopes = {"read", "write", "admin"} if user.role == Role.admin else {"read", "write"}
    principal = Principal(
        user=user,
        scopes=scopes,
        via="session",
        csrf_token=web_session.csrf_token,
        ip=client_ip(request),
    )
    if request.method in UNSAFE:
        await check_csrf(request, principal)
    return principal


async def check_csrf(request: Request, principal: Principal) -> None:
    expected = principal.csrf_token or ""
    sent = request.headers.get(CSRF_HEADER)
    content_type = request.headers.get("content-type", "")
    if sent is None and content_type.startswith("application/x-www-form-urlencoded"):
        sent = str((await request.form()).get(CSRF_FIELD, ""))
    if sent is None and content_type.startswith("multipart/form-data"):
        # The upload parser streams the body to disk; it checks the form field itself.
        request.state.csrf_expected = expected
        return
    if not sent or not same(sent, expected):
        raise Forbidden("the form has expired or did not come from tunelab: reload the page")


PUBLIC = Rule("public", scope=None, roles=None)
ANY_USER = Rule("any user", scope="read", roles=None)
# Reviewers write their ratings; what they may rate is checked per campaign by the service.
ANY_WRITER = Rule("any user, write", scope="write", roles=None)
READER = Rule("trainer or admin, read", scope="read", roles=frozenset({Role.admin, Role.trainer}))
TRAINER = Rule(
    "trainer or admin, write", scope="write", roles=frozenset({Role.admin, Role.trainer})
)
ADMIN = Rule("admin", scope="admin", roles=frozenset({Role.admin}))

Public = Annotated[None, Depends(PUBLIC)]
CurrentUser = Annotated[Principal, Depends(ANY_USER)]
CurrentWriter = Annotated[Principal, Depends(ANY_WRITER)]
CurrentReader = Annotated[Principal, Depends(READER)]
CurrentTrainer = Annotated[Principal, Depends(TRAINER)]
CurrentAdmin = Annotated[Principal, Depends(ADMIN)]
