"""Reviewing: a reviewer's campaigns, their queue of blinded items, and saving a rating.

A reviewer sees answers as "left" and "right"; the assignment says which model is on which
side, and ratings are stored in model terms (A and B), so nothing a reviewer reads names a
model. A campaign a user does not review in is NotFound, exactly like one that does not exist.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from app.core.db import utcnow
from app.core.errors import Conflict, InvalidInput, NotFound
from app.models import (
    CampaignReviewer,
    CampaignStatus,
    Rating,
    ReviewAssignment,
    ReviewCampaign,
    ReviewItem,
    User,
)
from app.schemas.review import RatingIn, ReviewerItem


def reviewer_campaign(session: Session, user: User, campaign_id: uuid.UUID) -> ReviewCampaign:
    """A campaign ``user`` reviews in; NotFound for any other (and for drafts)."""
    campaign = session.get(ReviewCampaign, campaign_id)
    if campaign is None or campaign.status == CampaignStatus.draft:
        raise NotFound("review campaign not found")
    member = session.scalar(
        select(CampaignReviewer.id).where(
            CampaignReviewer.campaign_id == campaign_id, CampaignReviewer.user_id == user.id
        )
    )
    if member is None:
        raise NotFound("review campaign not found")
    return campaign


def my_campaigns(session: Session, *, user: User) -> list[dict[str, Any]]:
    """The campaigns ``user`` reviews in, with their progress and the next item to grade."""
    rows = session.scalars(
        select(ReviewCampaign)
        .join(CampaignReviewer, CampaignReviewer.campaign_id == ReviewCampaign.id)
        .where(CampaignReviewer.user_id == user.id, ReviewCampaign.status != CampaignStatus.draft)
        .order_by(ReviewCampaign.created_at.desc())
    ).all()
    return [progress(session, campaign=campaign, user=user) for campaign in rows]


def progress(session: Session, *, campaign: ReviewCampaign, user: User) -> dict[str, Any]:
    """How far ``user`` is through a campaign, and their next item without a grade."""
    total, rated, upcoming = _progress(session, campaign.id, user.id)
    return {
        "id": campaign.id,
        "name": campaign.name,
        "status": campaign.status,
        "total": total,
        "rated": rated,
        "next_sequence": upcoming,
    }


def _progress(
    session: Session, campaign_id: uuid.UUID, user_id: uuid.UUID
) -> tuple[int, int, int | None]:
    rows = session.execute(
        select(ReviewAssignment.sequence, Rating.id)
        .outerjoin(Rating, Rating.assignment_id == ReviewAssignment.id)
        .where(ReviewAssignment.campaign_id == campaign_id, ReviewAssignment.reviewer_id == user_id)
        .order_by(ReviewAssignment.sequence)
    ).all()
    unrated = [seq for seq, rating in rows if rating is None]
    return len(rows), len(rows) - len(unrated), (unrated[0] if unrated else None)


def _assignment(
    session: Session, campaign: ReviewCampaign, user: User, sequence: int
) -> ReviewAssignment:
    assignment = session.scalar(
        select(ReviewAssignment).where(
            ReviewAssignment.campaign_id == campaign.id,
            ReviewAssignment.reviewer_id == user.id,
            ReviewAssignment.sequence == sequence,
        )
    )
    if assignment is None:
        raise NotFound(f"you have no item {sequence} in this campaign")
    return assignment


def reviewer_item(
    session: Session, *, campaign: ReviewCampaign, user: User, sequence: int
) -> ReviewerItem:
    """Item ``sequence`` of the reviewer's queue, blinded: answers as left and right."""
    assignment = _assignment(session, campaign, user, sequence)
    item = session.get(ReviewItem, assignment.item_id)
    assert item is not None
    rating = session.scalar(select(Rating).where(Rating.assignment_id == assignment.id))
    total, rated, _ = _progress(session, campaign.id, user.id)
    left, right = (
        (item.answer_b, item.answer_a) if assignment.swapped else (item.answer_a, item.answer_b)
    )
    view = ReviewerItem(
        campaign_id=campaign.id,
        campaign_name=campaign.name,
        instructions=campaign.instructions,
        mode=campaign.mode,
        criteria=list(campaign.criteria),
        sequence=sequence,
        total=total,
        rated=rated,
        prompt=item.prompt,
        messages=item.messages,
        reference=item.reference,
        left=left or "",
        right=right if campaign.model_b else None,
        status=campaign.status,
    )
    if rating is not None:
        to_side = _sides(assignment.swapped)
        view.choice = _blind_choice(rating.choice, assignment.swapped)
        view.scores = {to_side[m]: dict(s) for m, s in rating.scores.items() if m in to_side}
        view.comment = rating.comment
        view.revision = rating.revision
    return view


def _sides(swapped: bool) -> dict[str, str]:
    """Model ("a"/"b") to the side it is shown on for this assignment."""
    return {"a": "right", "b": "left"} if swapped else {"a": "left", "b": "right"}


def _blind_choice(choice: str | None, swapped: bool) -> str | None:
    if choice in ("a", "b"):
        return _sides(swapped)[choice]
    return choice


def save_rating(
    session: Session, *, campaign: ReviewCampaign, user: User, sequence: int, body: RatingIn
) -> Rating:
    """Store the reviewer's grade for one item: insert or update the assignment's one row, so
    repeating the request (a double click, a retry, a second tab) never adds a rating."""
    if campaign.status != CampaignStatus.open:
        raise Conflict(f"the campaign is {campaign.status}; ratings can no longer change")
    assignment = _assignment(session, campaign, user, sequence)
    if body.choice is not None and campaign.mode == "rating":
        raise InvalidInput.on("choice", "this campaign asks for ratings only")
    if body.choice in ("right", "tie") and campaign.model_b is None:
        raise InvalidInput.on("choice", "there is only one answer to grade")
    to_model = {side: model for model, side in _sides(assignment.swapped).items()}
    scores: dict[str, dict[str, int]] = {}
    for side, given in body.scores.items():
        if side == "right" and campaign.model_b is None:
            raise InvalidInput.on("scores.right", "there is only one answer to grade")
        for criterion, value in given.items():
            if criterion not in campaign.criteria:
                raise InvalidInput.on(
                    f"scores.{side}.{criterion}",
                    f"not a criterion of this campaign ({', '.join(campaign.criteria)})",
                )
            if not 1 <= value <= 5:
                raise InvalidInput.on(f"scores.{side}.{criterion}", "ratings go from 1 to 5")
        scores[to_model[side]] = dict(given)
    choice = to_model.get(body.choice or "", body.choice)
    now = utcnow()
    values: dict[str, Any] = {
        "assignment_id": assignment.id,
        "campaign_id": campaign.id,
        "item_id": assignment.item_id,
        "reviewer_id": user.id,
        "choice": choice,
        "scores": scores,
        "comment": body.comment,
        "revision": 1,
        "created_at": now,
        "updated_at": now,
    }
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(Rating).values(values)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["assignment_id"],
            set_={
                "choice": statement.excluded.choice,
                "scores": statement.excluded.scores,
                "comment": statement.excluded.comment,
                "updated_at": statement.excluded.updated_at,
                "revision": Rating.revision + 1,
            },
        )
    )
    session.flush()
    rating = session.scalar(select(Rating).where(Rating.assignment_id == assignment.id))
    assert rating is not None
    session.refresh(rating)
    return rating
