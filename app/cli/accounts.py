"""``tunelab db``, ``tunelab user`` and ``tunelab token``: run on a machine that reaches the
database, with no server needed."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from app.core.i18n import gettext
from app.core.messages import translate_message


def settings_ready() -> Any:
    from app.core.config import get_settings

    settings = get_settings()
    settings.ensure_dirs()
    return settings


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from app.core.migrate import upgrade

    settings = settings_ready()
    upgrade(args.revision)
    print(
        gettext(
            "database at %(url)s is at revision %(revision)s",
            url=_safe_url(settings.sqlalchemy_url),
            revision=args.revision,
        )
    )
    return 0


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def cmd_user_create(args: argparse.Namespace) -> int:
    import getpass

    from app.core.db import session_scope
    from app.core.errors import TunelabError
    from app.models import Role
    from app.services.accounts import users as accounts

    settings_ready()
    role = Role.admin if args.admin else Role(args.role)
    password = args.password
    if password is None and not args.no_password and sys.stdin.isatty():
        password = (
            getpass.getpass(
                gettext("password for %(email)s (empty: use a login link): ", email=args.email)
            )
            or None
        )
    try:
        with session_scope() as session:
            user = accounts.create_user(session, email=args.email, role=role, password=password)
            print(gettext("created %(role)s %(email)s", role=gettext(role), email=user.email))
            if password is None:
                _print_login_link(session, user)
    except TunelabError as exc:
        print(error_line(exc.message), file=sys.stderr)
        return 2
    return 0


def error_line(message: str) -> str:
    """ "error: …" in the terminal's language, the message too when the catalog has it."""
    return gettext("error: %(message)s", message=translate_message(message))


def _print_login_link(session: Any, user: Any) -> None:
    from datetime import timedelta

    from app.services.accounts import users as accounts

    settings = settings_ready()
    secret = accounts.create_login_link(session, user=user, valid_for=timedelta(days=1))
    link = f"http://{settings.host}:{settings.port}/login/link/{secret}"
    print(gettext("one-time login link (valid for a day): %(link)s", link=link), flush=True)


def cmd_user_login_link(args: argparse.Namespace) -> int:
    from app.core.db import session_scope
    from app.core.errors import TunelabError
    from app.services.accounts import users as accounts

    settings_ready()
    try:
        with session_scope() as session:
            _print_login_link(session, accounts.find_user(session, email=args.email))
    except TunelabError as exc:
        print(error_line(exc.message), file=sys.stderr)
        return 2
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from app.core.db import session_scope, utcnow
    from app.core.errors import TunelabError
    from app.services.accounts import credentials
    from app.services.accounts import users as accounts

    settings_ready()
    expires = utcnow() + timedelta(days=args.expires_days) if args.expires_days else None
    try:
        with session_scope() as session:
            user = accounts.find_user(session, email=args.user)
            _, secret = credentials.create_token(
                session,
                user=user,
                name=args.name,
                scopes=args.scopes.split(","),
                # Whoever runs the CLI holds the database itself: any scope the user's role
                # allows.
                granted=set(credentials.SCOPES),
                expires_at=expires,
            )
    except TunelabError as exc:
        print(error_line(exc.message), file=sys.stderr)
        return 2
    print(secret)
    return 0
