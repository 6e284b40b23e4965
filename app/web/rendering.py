"""Rendering pages: templates get the caller, the CSRF token of their session and the
language of the request (app.core.i18n: ``{% trans %}``, ``_()`` and the formatting filters)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from starlette.datastructures import FormData

from app.core import i18n
from app.core.errors import FieldError, InvalidInput, TunelabError
from app.core.messages import field_label, status_text, translate_errors, translate_message
from app.core.paths import TEMPLATES_DIR
from app.core.words import clock_duration, short_id, size_in_words
from app.web import display_words
from app.web.form_tokens import form_token_input
from worker.spec.methods import METHODS


def method_title(name: object) -> str:
    """A training method's name ("lora", "p_tuning") as people write it, in their language."""
    method = METHODS.get(name) if isinstance(name, str) else None
    return i18n.gettext(method.title) if method else str(name)


def readable_json(value: Any) -> str:
    """JSON for people: indented, and Chinese (any text) as itself, not ``\\u4f60``. For an
    element's content, where autoescaping applies; ``tojson`` stays for scripts."""
    return json.dumps(value, ensure_ascii=False, indent=2, default=str)


templates = Jinja2Templates(directory=TEMPLATES_DIR)
templates.env.add_extension("jinja2.ext.i18n")
# Paragraphs wrapped over several lines in a template are one message, spaces collapsed.
templates.env.policies["ext.i18n.trimmed"] = True
templates.env.install_gettext_callables(  # type: ignore[attr-defined]
    i18n.gettext, i18n.ngettext, newstyle=True
)
# Pages format, they do not compute: ids, sizes, durations, numbers and moments read the same
# everywhere, in the reader's language.
templates.env.filters.update(
    short_id=short_id,
    size=size_in_words,
    duration=clock_duration,
    number=i18n.number,
    percent=i18n.percent,
    datetime=i18n.datetime_text,
    date=i18n.date_text,
    time=i18n.time_text,
    lang_tag=i18n.lang_tag,
    # Error tables: a field's label (its API name stays in the title), the message in words.
    field_label=field_label,
    error_text=translate_message,
    readable_json=readable_json,
    status=status_text,
    method_title=method_title,
)
# Stored English values (default criteria, model labels, metric names, …) in the reader's words.
templates.env.filters.update(display_words.FILTERS)
templates.env.globals.update(display_words.GLOBALS)
# Creation forms carry a hidden token so that back-and-resubmit creates nothing twice.
templates.env.globals["form_token_input"] = form_token_input


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    principal = getattr(request.state, "principal", None)
    # The snapshot, not the ORM row: error pages render after the request's session closed.
    context.setdefault("me", principal.viewer if principal else None)
    context.setdefault("csrf_token", principal.csrf_token if principal else "")
    locale = i18n.current_locale()
    context.setdefault("locale", locale)
    context.setdefault("languages", i18n.LANGUAGES)
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def error_page(
    request: Request, status_code: int, message: str, errors: list[FieldError]
) -> HTMLResponse:
    return render(
        request,
        "error.html",
        status_code,
        message=translate_message(message),
        errors=translate_errors(errors),
    )


def form_errors(exc: Exception) -> list[FieldError]:
    """A refusal as errors to show beside a form's fields: a service's domain error, or
    pydantic's (whose messages are translated like the API's)."""
    if isinstance(exc, ValidationError):
        exc = InvalidInput.from_validation(exc)
    if isinstance(exc, TunelabError):
        return translate_errors(exc.errors or [FieldError(message=exc.message)])
    raise exc


def form_page(
    request: Request,
    name: str,
    exc: TunelabError | ValidationError,
    *,
    form: Mapping[str, Any],
    **context: Any,
) -> HTMLResponse:
    """A form's page again after a refusal: the input as sent, each message beside its field,
    and a 4xx status (the domain error's own, 422 for a validation error)."""
    status_code = exc.status_code if isinstance(exc, TunelabError) else 422
    message = exc.message if isinstance(exc, TunelabError) else None
    return render(
        request,
        name,
        status_code,
        form=form,
        errors=form_errors(exc),
        form_message=translate_message(message) if message else None,
        **context,
    )


GUIDE_COOKIE = "tunelab_guide"


def guide_context(request: Request, steps: list[Any]) -> dict[str, Any]:
    """The guided path for a page, unless the reader hid it (a cookie, "off")."""
    hidden = request.cookies.get(GUIDE_COOKIE) == "off"
    return {"guide": steps, "show_guide": not hidden, "guide_hidden": hidden}


async def form_fields(request: Request) -> dict[str, str]:
    """A submitted form's fields as text (files are not expected here)."""
    return {k: str(v) for k, v in (await request.form()).items()}


async def form_data(request: Request) -> FormData:
    return await request.form()


# Read on the event loop as a dependency, so the routes that take a form can be plain ``def``
# routes, which FastAPI runs on its thread pool: their database work never blocks the loop.
FormFields = Annotated[dict[str, str], Depends(form_fields)]
Form = Annotated[FormData, Depends(form_data)]
