"""The stored answers of an evaluation: writing them, searching and paging through them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from app.models import EvalSample, Evaluation

SHOW = ("all", "worse", "better", "same")


def list_samples(
    session: Session,
    *,
    evaluation: Evaluation,
    q: str | None = None,
    show: str = "all",
    order: str = "worst",
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[EvalSample], int]:
    """A page of samples: searched in prompt, reference and answers, filtered by how the
    subject did against the baseline, worst first by default."""
    conditions: list[ColumnElement[bool]] = [EvalSample.evaluation_id == evaluation.id]
    if q:
        pattern = "%" + _escape_like(q.strip().lower()) + "%"
        conditions.append(EvalSample.search_text.like(pattern, escape="\\"))
    if show == "worse":
        conditions.append(EvalSample.delta < 0)
    elif show == "better":
        conditions.append(EvalSample.delta > 0)
    elif show == "same":
        conditions.append(EvalSample.delta == 0)
    total = session.scalar(select(func.count()).select_from(EvalSample).where(*conditions)) or 0
    ordering = (
        [EvalSample.delta.is_(None), EvalSample.delta, EvalSample.position]
        if order == "worst"
        else [EvalSample.delta.is_(None), EvalSample.delta.desc(), EvalSample.position]
        if order == "best"
        else [EvalSample.position]
    )
    rows = session.scalars(
        select(EvalSample).where(*conditions).order_by(*ordering).limit(limit).offset(offset)
    ).all()
    return list(rows), total


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def all_samples(session: Session, *, evaluation_id: uuid.UUID) -> list[EvalSample]:
    return list(
        session.scalars(
            select(EvalSample)
            .where(EvalSample.evaluation_id == evaluation_id)
            .order_by(EvalSample.position)
        ).all()
    )


def store_samples(
    session: Session, *, evaluation_id: uuid.UUID, samples: Sequence[dict[str, Any]]
) -> None:
    """An evaluation's answers, written in the transaction that marks it succeeded (so a
    reader sees none or all of them)."""
    # A re-queued attempt may follow one that died after writing: start clean.
    session.query(EvalSample).filter(EvalSample.evaluation_id == evaluation_id).delete()
    session.add_all(EvalSample(evaluation_id=evaluation_id, **row) for row in samples)
    session.flush()


def search_text(prompt: str, reference: str, outputs: dict[str, str]) -> str:
    return "\n".join([prompt, reference, *outputs.values()]).lower()
