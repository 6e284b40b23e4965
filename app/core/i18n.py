"""Chinese and English: which language a request is answered in, its messages (gettext
catalogs under app/translations) and numbers, dates and durations the way its readers write
them (Babel).

The language of a request is, in this order: the user's own setting (the account page), the
switch in the page header (a cookie), the browser's ``Accept-Language``, English. A middleware
(:class:`LocaleMiddleware`) picks it from the cookie and the header before the route runs; the
authentication dependency applies the user's setting once it knows the user. Everything that
speaks to a person (templates, pages, error bodies, the CLI) calls :func:`gettext` (``_``),
which reads the current language from a context variable, so the same code answers each
request in its own language.

The catalogs are ``app/translations/<locale>/LC_MESSAGES/messages.po``; ``make install``, the
wheel build (setup.py) and the Docker images compile them to ``messages.mo``. A checkout whose
``.mo`` is missing or older than its ``.po`` (an edited translation, no ``make`` since) reads
the ``.po`` itself, so a page never shows a stale translation. ``make translations`` extracts
the messages, updates the catalogs and compiles them (see the README).
"""

from __future__ import annotations

import contextlib
import functools
import gettext as gettext_module
import io
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from babel import Locale
from babel.dates import format_skeleton
from babel.numbers import format_decimal, format_percent
from babel.support import Translations

from app.core.paths import TRANSLATIONS_DIR

DEFAULT_LOCALE = "en"
# Each supported language, named in itself (the switch shows these).
LANGUAGES: dict[str, str] = {"en": "English", "zh_CN": "中文"}
# The header switch's cookie: a year, the whole site.
LOCALE_COOKIE = "tunelab_lang"
LOCALE_COOKIE_MAX_AGE = 365 * 24 * 3600
DOMAIN = "messages"


def normalize(tag: str | None) -> str | None:
    """A supported locale for a language tag ("zh-CN", "zh_Hans", "zh", "en-GB"), or None.

    Only Simplified Chinese is translated; a reader of any Chinese gets it rather than English.
    """
    if not tag:
        return None
    tag = tag.strip().replace("_", "-").lower()
    language = tag.split("-", 1)[0]
    if language == "zh":
        return "zh_CN"
    if language == "en":
        return "en"
    return None


def lang_tag(locale: object) -> str:
    """The HTML/BCP 47 tag of a locale: "zh_CN" → "zh-CN"; anything else English's."""
    found = normalize(locale if isinstance(locale, str) else None)
    return found.replace("_", "-") if found else DEFAULT_LOCALE


def from_accept_language(header: str | None) -> str | None:
    """The best supported locale of an ``Accept-Language`` header ("zh-CN,zh;q=0.9,en;q=0.8")."""
    if not header:
        return None
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if tag and quality > 0:
            ranked.append((-quality, position, tag))
    for _, _, tag in sorted(ranked):
        if (found := normalize(tag)) is not None:
            return found
    return None


def choose(
    *, user: str | None = None, cookie: str | None = None, accept_language: str | None = None
) -> str:
    """The user's setting, else the header switch's cookie, else the browser's, else English."""
    for candidate in (normalize(user), normalize(cookie), from_accept_language(accept_language)):
        if candidate is not None:
            return candidate
    return DEFAULT_LOCALE


def from_environment(environ: dict[str, str] | None = None) -> str:
    """The CLI's language: ``TUNELAB_LANGUAGE``, else the POSIX locale variables in gettext's
    order (``LANGUAGE``, ``LC_ALL``, ``LC_MESSAGES``, ``LANG``: "zh_CN.UTF-8"), else English."""
    import os

    env = os.environ if environ is None else environ
    for name in ("TUNELAB_LANGUAGE", "LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(name, "")
        if not value:
            continue
        # LANGUAGE may list several ("zh_CN:en"); C and POSIX mean no language: English.
        first = value.split(":")[0].split(".")[0]
        return normalize(first) or DEFAULT_LOCALE
    return DEFAULT_LOCALE


# --- the current language -------------------------------------------------------------------


@dataclass
class _Choice:
    """Mutable, so that a dependency run in another context (a thread) can still change the
    request's language: every copy of the context shares this one object."""

    locale: str = DEFAULT_LOCALE


_current: ContextVar[_Choice | None] = ContextVar("tunelab_locale", default=None)


def current_locale() -> str:
    choice = _current.get()
    return choice.locale if choice is not None else DEFAULT_LOCALE


def set_locale(locale: str) -> None:
    """Answer the rest of this request (or this command) in ``locale``."""
    locale = normalize(locale) or DEFAULT_LOCALE
    choice = _current.get()
    if choice is None:
        _current.set(_Choice(locale))
    else:
        choice.locale = locale


@contextlib.contextmanager
def using_locale(locale: str) -> Iterator[None]:
    token = _current.set(_Choice(normalize(locale) or DEFAULT_LOCALE))
    try:
        yield
    finally:
        _current.reset(token)


class LocaleMiddleware:
    """Picks each request's language from the header switch's cookie and ``Accept-Language``
    before anything else runs; the user's own setting is applied once the user is known
    (``app.api.deps``)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        cookie = _cookie(headers.get("cookie", ""), LOCALE_COOKIE)
        locale = choose(cookie=cookie, accept_language=headers.get("accept-language"))
        token = _current.set(_Choice(locale))
        try:
            await self.app(scope, receive, send)
        finally:
            _current.reset(token)


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value.strip().strip('"')
    return None


# --- messages -------------------------------------------------------------------------------


@functools.cache
def translations(locale: str) -> gettext_module.NullTranslations:
    folder = TRANSLATIONS_DIR / locale / "LC_MESSAGES"
    mo, po = folder / f"{DOMAIN}.mo", folder / f"{DOMAIN}.po"
    if mo.is_file() and (not po.is_file() or mo.stat().st_mtime >= po.stat().st_mtime):
        with mo.open("rb") as fp:
            return Translations(fp, domain=DOMAIN)
    if po.is_file():
        # A checkout without a fresh `make`: compile the catalog in memory.
        from babel.messages.mofile import write_mo
        from babel.messages.pofile import read_po

        with po.open("rb") as fp:
            catalog = read_po(fp, locale=locale, domain=DOMAIN)
        buffer = io.BytesIO()
        write_mo(buffer, catalog)
        buffer.seek(0)
        return Translations(buffer, domain=DOMAIN)
    return gettext_module.NullTranslations()


def gettext(message: str, /, **variables: Any) -> str:
    """``message`` in the current language; ``%(name)s`` placeholders filled from
    ``variables`` (after translating, so a translation may move them)."""
    translated = translations(current_locale()).gettext(message)
    return translated % variables if variables else translated


def ngettext(singular: str, plural: str, n: int, /, **variables: Any) -> str:
    """The singular or plural form for ``n``, placeholders filled from ``variables`` (none
    given: left for the caller, as Jinja2's i18n extension fills them itself)."""
    translated = translations(current_locale()).ngettext(singular, plural, n)
    return translated % variables if variables else translated


_ = gettext


def N_(message: str) -> str:
    """Marks a message for the catalog without translating it here (a constant whose reader's
    language is only known later: pass it to ``_`` then)."""
    return message


# --- numbers, dates and durations -----------------------------------------------------------


def babel_locale() -> Locale:
    return Locale.parse(current_locale())


def number(value: float | int, *, digits: int | None = None) -> str:
    """12,345 or 0.84 (at most ``digits`` decimals when given)."""
    if digits is not None:
        pattern = "#,##0" + ("." + "#" * digits if digits > 0 else "")
        return format_decimal(value, format=pattern, locale=current_locale())
    return format_decimal(value, locale=current_locale())


def percent(fraction: float, *, digits: int = 0) -> str:
    pattern = "#,##0" + ("." + "#" * digits if digits > 0 else "") + "%"
    return format_percent(fraction, format=pattern, locale=current_locale())


def datetime_text(value: datetime | None, *, seconds: bool = False) -> str:
    """A moment, in UTC: "Dec 5, 2026 02:09" / "2026年12月5日 02:09"."""
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    locale = current_locale()
    day = format_skeleton("yMMMd", value, tzinfo=UTC, locale=locale)
    clock = format_skeleton("Hms" if seconds else "Hm", value, tzinfo=UTC, locale=locale)
    return f"{day} {clock}"


def date_text(value: date | datetime | None) -> str:
    """A day: "Dec 5, 2026" / "2026年12月5日"."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        value = value.astimezone(UTC) if value.tzinfo else value
    return format_skeleton("yMMMd", value, locale=current_locale())


def time_text(value: datetime | None) -> str:
    """A time of day, with seconds, in UTC: "02:09:33"."""
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return format_skeleton("Hms", value, tzinfo=UTC, locale=current_locale())
