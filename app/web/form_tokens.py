"""Creation forms are idempotent per submission: a hidden token, rendered into the form,
names the one object that submission creates.

Back and resubmit (or a double click) sends the same token again; the route then answers with
the object already created instead of making a duplicate. Use in a template::

    {{ form_token_input(form) }}

and in the route that creates the object::

    earlier = form_tokens.created_before(session, form=form, user=me.user, kind="job")
    if earlier:
        return RedirectResponse(f"/jobs/{earlier}", status_code=303)
    job = ...create it...
    kept = form_tokens.remember(session, form=form, user=me.user, kind="job", object_id=job.id)
    if kept != job.id:  # the same form, sent twice at once: the other submission won
        return RedirectResponse(f"/jobs/{kept}", status_code=303)
    session.commit()

A form re-rendered after an error keeps its token (it is part of the kept input), so the
submission that finally succeeds is the one that counts. A form sent without a token (an old
page, a script) still works; it is only not protected against resubmission.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Mapping

from markupsafe import Markup, escape
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.models import FormSubmission, User

FIELD = "form_token"
_SHAPE = re.compile(r"[A-Za-z0-9_-]{16,64}")


def new_token() -> str:
    return secrets.token_urlsafe(24)


def token_of(form: Mapping[str, object]) -> str | None:
    """The submission's token, or None when the form carried none (or a malformed one)."""
    token = str(form.get(FIELD) or "")
    return token if _SHAPE.fullmatch(token) else None


def form_token_input(form: Mapping[str, object] | None = None) -> Markup:
    """The hidden field: the token the form was sent with (a re-render), else a new one."""
    token = token_of(form or {}) or new_token()
    return Markup('<input type="hidden" name="{}" value="{}">').format(FIELD, escape(token))


def created_before(
    session: Session, *, form: Mapping[str, object], user: User, kind: str
) -> uuid.UUID | None:
    """The id of what this very submission already created, if it was sent before."""
    token = token_of(form)
    if token is None:
        return None
    row = session.get(FormSubmission, token)
    if row is None or row.user_id != user.id or row.kind != kind:
        return None
    return row.object_id


def remember(
    session: Session,
    *,
    form: Mapping[str, object],
    user: User,
    kind: str,
    object_id: uuid.UUID,
) -> uuid.UUID:
    """Record that this submission created ``object_id``, in the caller's transaction.

    Returns ``object_id``; or, when the same submission was committed meanwhile by a
    concurrent request (its row conflicts), rolls the caller's session back, so nothing of
    this attempt is kept, and returns the id the other request created.
    """
    token = token_of(form)
    if token is None:
        return object_id
    taken = session.get(FormSubmission, token)
    if taken is not None and (taken.user_id != user.id or taken.kind != kind):
        # Another user's (or another form's) token, copied: this submission goes unprotected
        # rather than answering with an object that is not the sender's.
        return object_id
    try:
        with session.begin_nested():
            session.add(
                FormSubmission(token=token, user_id=user.id, kind=kind, object_id=object_id)
            )
    except IntegrityError:
        session.rollback()
        earlier = created_before(session, form=form, user=user, kind=kind)
        if earlier is None:
            raise
        return earlier
    return object_id
