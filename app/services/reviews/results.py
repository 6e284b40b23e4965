"""A campaign's results: win rate, ratings, agreement and disagreements, and the human part of
the project's verdict; exports of every rating."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.csv_cells import safe_writer
from app.models import (
    CampaignStatus,
    Rating,
    ReviewAssignment,
    ReviewCampaign,
    ReviewItem,
    User,
)
from app.services.reviews.stats import RatingRow, summarise


def _ratings(
    session: Session, campaign_id: uuid.UUID
) -> list[tuple[Rating, ReviewItem, str, bool]]:
    rows = session.execute(
        select(Rating, ReviewItem, User.email, ReviewAssignment.swapped)
        .join(ReviewItem, ReviewItem.id == Rating.item_id)
        .join(User, User.id == Rating.reviewer_id)
        .join(ReviewAssignment, ReviewAssignment.id == Rating.assignment_id)
        .where(Rating.campaign_id == campaign_id)
        .order_by(ReviewItem.position, User.email)
    ).all()
    return [(r, i, e, s) for r, i, e, s in rows]


def results(session: Session, *, campaign: ReviewCampaign) -> dict[str, Any]:
    """Everything the results page and API show; model names are in ``models`` either way,
    since only the project's owners see results."""
    rated = _ratings(session, campaign.id)
    rows = [
        RatingRow(item=item.position, reviewer=email, choice=r.choice, scores=r.scores or {})
        for r, item, email, _ in rated
    ]
    summary = summarise(rows)
    prompts = {item.position: item.prompt for _, item, _, _ in rated}
    for entry in summary.get("disagreements", []):
        entry["prompt"] = prompts.get(entry["item"], "")
    return {
        "campaign_id": str(campaign.id),
        "status": campaign.status,
        "final": campaign.status == CampaignStatus.closed,
        "models": {
            "a": campaign.model_a.get("label"),
            "b": campaign.model_b.get("label") if campaign.model_b else None,
        },
        "criteria": list(campaign.criteria),
        **summary,
    }


def human_summary(session: Session, *, campaign: ReviewCampaign) -> dict[str, Any] | None:
    """The figures human criteria of the verdict are checked against: model B's win rate over
    model A and model B's (or, rating-only, model A's) mean rating, with intervals."""
    found = results(session, campaign=campaign)
    if not found.get("ratings_count"):
        return None
    subject = "b" if campaign.model_b else "a"
    human: dict[str, Any] = {"campaign_id": found["campaign_id"], "final": found["final"]}
    win = found.get("win_rate") or {}
    if win.get("win_rate") is not None:
        human["win_rate"] = {
            "value": win["win_rate"],
            "low": win["low"],
            "high": win["high"],
            "n": win["a"] + win["b"],
        }
    overall = ((found.get("ratings") or {}).get(subject) or {}).get("overall")
    if overall and overall.get("mean") is not None:
        human["rating"] = {
            "value": overall["mean"],
            "low": overall["low"],
            "high": overall["high"],
            "n": overall["n"],
        }
    return human


def export_rows(session: Session, *, campaign: ReviewCampaign) -> list[dict[str, Any]]:
    """One row per rating, in model terms (and the side each model was shown on)."""
    out = []
    for rating, item, email, swapped in _ratings(session, campaign.id):
        out.append(
            {
                "item": item.position,
                "source": item.source,
                "prompt": item.prompt,
                "reference": item.reference,
                "answer_a": item.answer_a,
                "answer_b": item.answer_b,
                "model_a": campaign.model_a.get("label"),
                "model_b": campaign.model_b.get("label") if campaign.model_b else None,
                "reviewer": email,
                "model_a_shown_on": "right" if swapped else "left",
                "choice": rating.choice,
                "scores": rating.scores,
                "comment": rating.comment,
                "revision": rating.revision,
                "updated_at": rating.updated_at.isoformat(),
            }
        )
    return out


def jsonl_lines(rows: list[dict[str, Any]]) -> Iterator[bytes]:
    for row in rows:
        yield orjson.dumps(row) + b"\n"


def csv_lines(rows: list[dict[str, Any]], criteria: list[str]) -> Iterator[str]:
    header = [
        "item",
        "source",
        "reviewer",
        "choice",
        "model_a",
        "model_b",
        "model_a_shown_on",
        *(f"a: {c}" for c in criteria),
        *(f"b: {c}" for c in criteria),
        "comment",
        "prompt",
        "reference",
        "answer_a",
        "answer_b",
        "revision",
        "updated_at",
    ]
    buffer = io.StringIO()
    writer = safe_writer(buffer)
    yield "\ufeff"
    writer.writerow(header)
    for row in rows:
        scores = row["scores"] or {}
        writer.writerow(
            [
                row["item"],
                row["source"],
                row["reviewer"],
                row["choice"] or "",
                row["model_a"],
                row["model_b"] or "",
                row["model_a_shown_on"],
                *((scores.get("a") or {}).get(c, "") for c in criteria),
                *((scores.get("b") or {}).get(c, "") for c in criteria),
                row["comment"],
                row["prompt"],
                row["reference"] or "",
                row["answer_a"],
                row["answer_b"] or "",
                row["revision"],
                row["updated_at"],
            ]
        )
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    if not rows:
        yield buffer.getvalue()
