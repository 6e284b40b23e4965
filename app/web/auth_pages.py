"""Login and logout, one-time login links, the account page (API tokens) and admin pages."""

from __future__ import annotations

import uuid
from datetime import timedelta

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.api.deps import (
    SESSION_COOKIE,
    CurrentAdmin,
    CurrentUser,
    CurrentWriter,
    Offset,
    Public,
    SessionDep,
    SettingsDep,
    client_ip,
    identify,
    make_router,
)
from app.core import i18n
from app.core.config import Settings
from app.core.db import utcnow
from app.core.errors import InvalidInput, TunelabError
from app.core.i18n import N_, gettext
from app.core.security import new_secret, same
from app.models import Role, User
from app.services.accounts import audit, credentials, invites
from app.services.accounts import users as accounts
from app.web.rendering import GUIDE_COOKIE, Form, form_errors, render

router = make_router(include_in_schema=False)
LOGIN_CSRF_COOKIE = "tunelab_login_csrf"


def _safe_next(target: str | None) -> str:
    # Only paths on this site: never "//evil.example" or "https://…".
    if target and target.startswith("/") and not target.startswith("//"):
        return target
    return "/"


def _secure(request: Request, settings: Settings) -> bool:
    return request.url.scheme == "https" or settings.env == "production"


def _log_in(
    request: Request, session: SessionDep, settings: Settings, user: User, target: str
) -> Response:
    """Start a session for ``user`` and send the browser on with its cookie."""
    cookie = credentials.start_session(
        session,
        user=user,
        ip=client_ip(request),
        user_agent=request.headers.get("user-agent", ""),
    )
    session.commit()
    response = RedirectResponse(_safe_next(target), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        httponly=True,
        samesite="lax",
        secure=_secure(request, settings),
        max_age=int(credentials.SESSION_LIFETIME.total_seconds()),
        path="/",
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


def _login_form(
    request: Request,
    settings: Settings,
    *,
    next_: str,
    error: str | None = None,
    status_code: int = 200,
    email: str = "",
) -> HTMLResponse:
    # The login form has no session yet, so its CSRF token is a double-submit cookie.
    token = new_secret()
    response = render(
        request,
        "auth/login.html",
        status_code,
        next=_safe_next(next_),
        login_csrf=token,
        error=error,
        email=email,
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=_secure(request, settings),
        path="/login",
    )
    return response


@router.get("/login")
def login_page(request: Request, settings: SettingsDep, _: Public, next: str = "/") -> HTMLResponse:
    return _login_form(request, settings, next_=next)


@router.post("/login")
def login(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    _: Public,
    form: Form,
) -> Response:
    email, password = str(form.get("email", "")), str(form.get("password", ""))
    next_ = str(form.get("next", "/"))
    cookie_token = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not cookie_token or not same(str(form.get("csrf_token", "")), cookie_token):
        return _login_form(
            request,
            settings,
            next_=next_,
            status_code=403,
            email=email,
            error=gettext("The form expired; please try again."),
        )
    try:
        user = accounts.authenticate(session, email=email, password=password, ip=client_ip(request))
    except TunelabError as exc:
        session.commit()  # the failed attempt counts towards throttling
        return _login_form(
            request,
            settings,
            next_=next_,
            error=exc.message,
            email=email,
            status_code=exc.status_code,
        )
    return _log_in(request, session, settings, user, next_)


@router.get("/login/link/{secret}")
def login_with_link(
    secret: str, request: Request, session: SessionDep, settings: SettingsDep, _: Public
) -> Response:
    try:
        user = accounts.use_login_link(session, secret=secret, ip=client_ip(request))
    except TunelabError as exc:
        return _login_form(
            request, settings, next_="/", error=exc.message, status_code=exc.status_code
        )
    # An invitee (or the first start's admin) has no password yet: the account page says how
    # to set one, so the next login needs no link.
    target = "/account?welcome=1#password" if user.password_hash is None else "/"
    return _log_in(request, session, settings, user, target)


@router.post("/logout")
def logout(request: Request, session: SessionDep, me: CurrentUser) -> Response:
    cookie = request.cookies.get(SESSION_COOKIE, "")
    credentials.end_session(session, cookie=cookie, user=me.user, ip=me.ip)
    session.commit()
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def _account(
    request: Request, session: SessionDep, me: CurrentUser, **extra: object
) -> HTMLResponse:
    tokens = credentials.list_tokens(session, user=me.user)
    return render(
        request,
        "auth/account.html",
        int(str(extra.pop("status_code", 200))),
        tokens=tokens,
        now=utcnow(),
        has_password=me.user.password_hash is not None,
        **extra,
    )


@router.get("/account")
def account_page(request: Request, session: SessionDep, me: CurrentUser) -> HTMLResponse:
    return _account(request, session, me)


def _remember_language(
    request: Request, response: Response, settings: Settings, locale: str | None
) -> None:
    if locale is None:
        response.delete_cookie(i18n.LOCALE_COOKIE, path="/")
        return
    response.set_cookie(
        i18n.LOCALE_COOKIE,
        locale,
        max_age=i18n.LOCALE_COOKIE_MAX_AGE,
        samesite="lax",
        secure=_secure(request, settings),
        path="/",
    )


@router.post("/language")
def switch_language(
    request: Request, session: SessionDep, settings: SettingsDep, _p: Public, form: Form
) -> Response:
    """The header's switch: a cookie for everyone; a logged-in user who chose a language on
    the account page has that setting changed too (it comes first)."""
    locale = i18n.normalize(str(form.get("locale", ""))) or i18n.DEFAULT_LOCALE
    response = RedirectResponse(_safe_next(str(form.get("next", "/"))), status_code=303)
    principal = identify(request, session) if request.cookies.get(SESSION_COOKIE) else None
    if (
        principal is not None
        and principal.user.locale
        and principal.csrf_token
        and same(str(form.get("csrf_token", "")), principal.csrf_token)
    ):
        accounts.set_locale(session, user=principal.user, locale=locale)
        session.commit()
    _remember_language(request, response, settings, locale)
    return response


@router.post("/guide")
def switch_guide(request: Request, settings: SettingsDep, _p: Public, form: Form) -> Response:
    """Hide the guided path (experts) or show it again: a cookie, like the language switch."""
    response = RedirectResponse(_safe_next(str(form.get("next", "/projects"))), status_code=303)
    if form.get("show") == "off":
        response.set_cookie(
            GUIDE_COOKIE,
            "off",
            max_age=i18n.LOCALE_COOKIE_MAX_AGE,
            samesite="lax",
            secure=_secure(request, settings),
            path="/",
        )
    else:
        response.delete_cookie(GUIDE_COOKIE, path="/")
    return response


@router.post("/account/language")
def account_language(
    request: Request, session: SessionDep, settings: SettingsDep, me: CurrentWriter, form: Form
) -> Response:
    """The account's language: one of tunelab's, or empty for the browser's choice."""
    chosen = str(form.get("locale", ""))
    locale = i18n.normalize(chosen)
    if chosen and locale is None:
        return _account(
            request,
            session,
            me,
            language_error=gettext("choose one of the languages offered"),
            status_code=422,
        )
    accounts.set_locale(session, user=me.user, locale=locale)
    session.commit()
    response = RedirectResponse("/account", status_code=303)
    _remember_language(request, response, settings, locale)
    return response


@router.post("/account/password")
def set_password(
    request: Request, session: SessionDep, me: CurrentWriter, form: Form
) -> HTMLResponse:
    """Set or change one's own password; then /login works without a link."""
    new, repeated = str(form.get("new_password", "")), str(form.get("repeat_password", ""))
    try:
        if new != repeated:
            raise InvalidInput.on("repeat_password", N_("the two new passwords differ"))
        invites.set_password(
            session,
            user=me.user,
            new_password=new,
            current_password=str(form.get("current_password", "")),
            ip=me.ip,
        )
    except TunelabError as exc:
        session.rollback()
        # Passwords are never sent back into a page; the message says which field to retype.
        return _account(
            request, session, me, password_errors=form_errors(exc), status_code=exc.status_code
        )
    session.commit()
    return _account(request, session, me, password_saved=True)


@router.post("/account/tokens")
def create_token(
    request: Request, session: SessionDep, me: CurrentWriter, form: Form
) -> HTMLResponse:
    scopes = [str(s) for s in form.getlist("scopes")] or ["read"]
    days = str(form.get("expires_days", "")).strip()
    try:
        expires = utcnow() + timedelta(days=int(days)) if days else None
        token, secret = credentials.create_token(
            session,
            user=me.user,
            name=str(form.get("name", "")),
            scopes=scopes,
            granted=me.scopes,
            expires_at=expires,
            ip=me.ip,
        )
    except (TunelabError, ValueError) as exc:
        session.rollback()
        message = (
            exc.message
            if isinstance(exc, TunelabError)
            else gettext("expiry must be a number of days")
        )
        return _account(request, session, me, token_error=message, token_form=form, status_code=422)
    session.commit()
    return _account(request, session, me, new_secret=secret, new_token=token)


@router.post("/account/tokens/{token_id}/revoke")
def revoke_token(
    token_id: uuid.UUID, request: Request, session: SessionDep, me: CurrentWriter
) -> Response:
    credentials.revoke_token(
        session, user=me.user, token_id=token_id, others=me.acts_as_admin, ip=me.ip
    )
    session.commit()
    return RedirectResponse("/account", status_code=303)


@router.get("/admin/audit")
def audit_page(
    request: Request, session: SessionDep, me: CurrentAdmin, offset: Offset = 0
) -> HTMLResponse:
    rows, total = audit.list_events(session, limit=100, offset=max(0, offset))
    return render(request, "auth/audit.html", events=rows, total=total, offset=offset, page=100)


@router.get("/admin/workers")
def workers_page(
    request: Request, session: SessionDep, settings: SettingsDep, me: CurrentAdmin
) -> HTMLResponse:
    from app.services import workers

    return render(
        request,
        "auth/workers.html",
        workers=workers.list_workers(session, settings=settings),
        describe=workers.capacity_words,
    )


@router.get("/admin/users")
def users_page(request: Request, session: SessionDep, me: CurrentAdmin) -> HTMLResponse:
    return render(
        request, "auth/users.html", users=accounts.list_users(session), error=None, form={}
    )


@router.post("/admin/users")
def create_user(request: Request, session: SessionDep, me: CurrentAdmin, form: Form) -> Response:
    try:
        accounts.create_user(
            session,
            email=str(form.get("email", "")),
            role=Role(str(form.get("role", "trainer"))),
            password=str(form.get("password", "")) or None,
            actor=me.user,
        )
    except (TunelabError, ValueError) as exc:
        session.rollback()
        message = exc.message if isinstance(exc, TunelabError) else gettext("choose a valid role")
        return render(
            request,
            "auth/users.html",
            422,
            users=accounts.list_users(session),
            error=message,
            form={k: v for k, v in form.items() if k != "password"},
        )
    session.commit()
    return RedirectResponse("/admin/users", status_code=303)


@router.post("/admin/invites")
def invite(request: Request, session: SessionDep, me: CurrentAdmin, form: Form) -> Response:
    """Invite by link: the page shows the one-time link once, to copy and send."""
    fields = {k: str(v) for k, v in form.items() if k != "csrf_token"}
    try:
        made = invites.invite(
            session,
            email=fields.get("email", ""),
            role=_role(fields.get("role", "trainer")),
            actor=me.user,
            ip=me.ip,
            days=_days(fields.get("days", "")),
        )
    except TunelabError as exc:
        session.rollback()
        return render(
            request,
            "auth/users.html",
            exc.status_code,
            users=accounts.list_users(session),
            error=None,
            form={},
            invite_form=fields,
            invite_errors=form_errors(exc),
        )
    session.commit()
    return render(
        request,
        "auth/users.html",
        users=accounts.list_users(session),
        error=None,
        form={},
        invitation=made,
        invite_link=invites.link_for(str(request.base_url), made.secret),
    )


def _role(text: str) -> Role:
    try:
        return Role(text)
    except ValueError:
        raise InvalidInput.on("role", N_("choose a valid role")) from None


def _days(text: str) -> int:
    if not text.strip():
        return invites.INVITE_DAYS
    try:
        return int(text)
    except ValueError:
        raise InvalidInput.on("days", N_("an invitation is valid for 1 to 30 days")) from None


@router.post("/admin/users/{user_id}/role")
def change_role(
    user_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    me: CurrentAdmin,
    form: Form,
) -> Response:
    user: User = accounts.get_user(session, user_id=user_id)
    try:
        role = Role(str(form.get("role", "")))
    except ValueError:
        return render(
            request,
            "auth/users.html",
            422,
            users=accounts.list_users(session),
            error=gettext("choose a valid role"),
            form={},
        )
    if role != user.role and user.id != me.user.id:  # an admin cannot demote themselves
        accounts.set_role(session, user=user, role=role, actor=me.user)
        credentials.revoke_sessions(session, user=user, actor=me.user)
        session.commit()
    return RedirectResponse("/admin/users", status_code=303)


@router.get("/admin/models")
def models_page(request: Request, session: SessionDep, me: CurrentAdmin) -> HTMLResponse:
    return render(
        request,
        "auth/models.html",
        permissions=accounts.model_permissions(session),
        error=None,
        form={},
    )


@router.post("/admin/models")
def set_model_permission(
    request: Request, session: SessionDep, me: CurrentAdmin, form: Form
) -> Response:
    model = str(form.get("model", "")).strip()
    if not model:
        return render(
            request,
            "auth/models.html",
            422,
            permissions=accounts.model_permissions(session),
            error=gettext("name the base model, e.g. a hub id or a folder"),
            form=dict(form.items()),
        )
    if model:
        accounts.set_model_permission(
            session,
            model=model,
            trust_remote_code=form.get("trust_remote_code") == "1",
            allow_pickle_weights=form.get("allow_pickle_weights") == "1",
            actor=me.user,
            ip=me.ip,
        )
        session.commit()
    return RedirectResponse("/admin/models", status_code=303)
