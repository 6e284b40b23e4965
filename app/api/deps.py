"""Dependencies shared by the JSON API and the pages, as ``Annotated`` aliases.

Every route names one access rule in its signature (``CurrentTrainer``, ``CurrentAdmin``,
``Public`` …); a test walks the app's routes and fails on any route without one.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.core.config import Settings, get_settings
from app.core.db import get_sessionmaker
from app.core.errors import Forbidden, Unauthorized
from app.core.i18n import set_locale
from app.core.security import digest, same
from app.models import Role
from app.services.access import Principal, Viewer
from app.services.accounts import credentials, token_cache

SESSION_COOKIE = "tunelab_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
# Every other method changes something (WebDAV verbs and custom methods included).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


async def get_session() -> AsyncIterator[Session]:
    # Routes commit explicitly: work that must follow a commit (enqueueing a job) stays visible
    # in the route. Closing rolls back anything left uncommitted by an error and detaches the
    # objects without expiring them, so an error page can still read what was loaded.
    # Making a session and closing one that holds no connection touch no database, so they
    # run on the event loop (two hops to the thread pool fewer per request); a session still
    # in a transaction (a route's error before its own release) is closed on the pool.
    session = get_sessionmaker()()
    try:
        yield session
    finally:
        if session.in_transaction():
            await run_in_threadpool(session.close)
        else:
            session.close()


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
Limit = Annotated[int, Query(ge=1, le=200, description="page size")]
# Bounded so that no value overflows the database's integers (a 500 instead of a 422).
Offset = Annotated[int, Query(ge=0, le=2**31 - 1, description="items to skip")]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


async def in_thread(session: Session, work: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run database work from an ``async`` route on the thread pool, never on the event loop.

    The session's connection goes back to the pool when the work is done, so a request never
    holds one across an ``await`` (a request waiting for its upload to arrive while holding a
    connection is how a small pool and many clients deadlock). Work that writes commits
    itself; what it leaves uncommitted is a bug and is refused here.
    """

    def run() -> T:
        result = work(*args, **kwargs)
        release(session)
        return result

    return await run_in_threadpool(run)


def release(session: Session) -> None:
    """Give the session's connection back to the pool; loaded objects stay readable."""
    if session.new or session.dirty or session.deleted:
        session.rollback()
        raise RuntimeError("database work left uncommitted changes before an await")
    session.commit()  # nothing to write; ends the transaction (expire_on_commit is off)


class ReleasingRoute(APIRoute):
    """A route whose request gives its database connection back before the route returns.

    A plain ``def`` route runs on a pool thread; the request's session is closed only later,
    in another hop to the thread pool. Between the two the request would hold a connection
    while it waits for a thread, and enough such requests leave every thread waiting for a
    connection that only a waiting request can give back. So the connection is released in
    the route's own thread (``async`` routes do it through ``in_thread``). Closing detaches
    what was loaded without expiring it, so the response is built from the loaded values.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not inspect.iscoroutinefunction(endpoint):
            endpoint = _releasing(endpoint)
        super().__init__(path, endpoint, **kwargs)


def _releasing(endpoint: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(endpoint)
    def run(*args: Any, **kwargs: Any) -> T:
        try:
            return endpoint(*args, **kwargs)
        finally:
            for value in kwargs.values():
                if isinstance(value, Session):
                    value.close()

    return run


def make_router(**kwargs: Any) -> APIRouter:
    """An APIRouter of ``ReleasingRoute`` routes; every router of the app is made here."""
    return APIRouter(route_class=ReleasingRoute, **kwargs)


class Rule:
    """An access rule: a FastAPI dependency that authenticates the caller and checks it.

    ``scope`` is what an API token must carry (admin ⊃ write ⊃ read); ``roles`` are the user
    roles allowed. A browser session carries every scope of its user's role, and its unsafe
    requests must bring the session's CSRF token (header or form field), whatever their
    content type.
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
        # A token checked moments ago needs no database work, so no hop to the thread pool.
        principal = recalled(request, session)
        if principal is None:
            principal = await in_thread(session, identify, request, session)
        if principal is None:
            raise Unauthorized("log in or send an API token (Authorization: Bearer …)")
        if principal.via == "session" and request.method not in SAFE_METHODS:
            await check_csrf(request, principal)
        if self.scope not in principal.scopes:
            raise Forbidden(f"this needs a token with the `{self.scope}` scope")
        # The snapshot: on the event loop nothing may touch the ORM row (and the database).
        if self.roles is not None and principal.viewer.role not in self.roles:
            raise Forbidden(f"your role ({principal.viewer.role}) may not do this")
        request.state.principal = principal
        if principal.viewer.locale:  # the user's own setting beats the cookie and the browser
            set_locale(principal.viewer.locale)
        return principal


def recalled(request: Request, session: Session) -> Principal | None:
    """The caller from a Bearer token found valid within the last few seconds
    (``app.services.accounts.token_cache``), without database work; None: ask ``identify``."""
    kind, _, secret = request.headers.get("authorization", "").partition(" ")
    if kind.lower() != "bearer" or not secret.strip():
        return None
    checked = token_cache.recall(digest(secret.strip()))
    if checked is None:
        return None
    user = token_cache.user_of(checked, session)
    return Principal(
        user=user,
        viewer=Viewer.of(user),
        scopes=credentials.expand_scopes(list(checked.scopes)),
        via="token",
        ip=client_ip(request),
        token_id=checked.token_id,
    )


def identify(request: Request, session: Session) -> Principal | None:
    """The caller from a Bearer token or the session cookie (database work: call it off the
    event loop). The CSRF check of a session's unsafe request is the caller's to make."""
    header = request.headers.get("authorization", "")
    if header:
        kind, _, secret = header.partition(" ")
        if kind.lower() != "bearer" or not secret:
            raise Unauthorized("send the API token as `Authorization: Bearer <token>`")
        seen = token_cache.generation()
        found = credentials.token_for_secret(session, secret=secret.strip())
        if found is None:
            raise Unauthorized("the API token is not valid (unknown, revoked or expired)")
        token, user = found
        token_cache.remember(digest(secret.strip()), seen, token, user)
        return Principal(
            user=user,
            viewer=Viewer.of(user),
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
    return Principal(
        user=user,
        viewer=Viewer.of(user),
        scopes=scopes,
        via="session",
        csrf_token=web_session.csrf_token,
        ip=client_ip(request),
    )


# Endpoints that stream a multipart body to disk themselves: parsing the whole form first
# would store a large upload twice, so the receiver checks the CSRF field as it arrives.
_STREAMED_UPLOADS: set[Callable[..., Any]] = set()


def streams_upload(endpoint: F) -> F:
    """Mark a route whose multipart body ``app.core.uploads.receive_upload`` reads."""
    _STREAMED_UPLOADS.add(endpoint)
    return endpoint


async def check_csrf(request: Request, principal: Principal) -> None:
    expected = principal.csrf_token or ""
    sent = request.headers.get(CSRF_HEADER)
    content_type = request.headers.get("content-type", "")
    if sent is None and content_type.startswith("multipart/form-data"):
        route = request.scope.get("route")
        if getattr(route, "endpoint", None) in _STREAMED_UPLOADS:
            request.state.csrf_expected = expected
            return
    if sent is None and content_type.startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        sent = str((await request.form()).get(CSRF_FIELD, ""))
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
