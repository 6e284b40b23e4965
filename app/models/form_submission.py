from __future__ import annotations

import uuid

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, Timestamped


class FormSubmission(Timestamped, Base):
    """A creation form that was sent once: its hidden token and what it created.

    Back and resubmit sends the same token again; the page answers with the object already
    created instead of making a second one (app.web.form_tokens).
    """

    __tablename__ = "form_submissions"

    token: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(32))  # "project", "job", "campaign", ...
    object_id: Mapped[uuid.UUID] = mapped_column()
