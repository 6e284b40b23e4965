"""Review campaigns (for the project's owners) and reviewing (for the reviewers in them)."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import Path, Query, Response
from fastapi.responses import StreamingResponse

from app.api.deps import (
    CurrentReader,
    CurrentTrainer,
    CurrentUser,
    CurrentWriter,
    Limit,
    Offset,
    SessionDep,
    make_router,
)
from app.schemas.common import Page
from app.schemas.review import (
    CampaignCreate,
    CampaignRead,
    PromptsAdd,
    RatingIn,
    ReviewerAdd,
    ReviewerCampaign,
    ReviewerItem,
)
from app.services.reviews import campaigns as service
from app.services.reviews import results as review_results
from app.services.reviews import reviewing

router = make_router(tags=["reviews"])
Sequence = Annotated[int, Path(ge=1, le=2**31 - 1, description="1-based place in your queue")]


@router.post("/review-campaigns", status_code=201, response_model=CampaignRead)
def create_campaign(body: CampaignCreate, session: SessionDep, me: CurrentTrainer) -> CampaignRead:
    """A blind review of an evaluation's answers (plus any typed prompts, which both models
    answer on a worker); opened at once for the named reviewers unless `open` is false."""
    campaign = service.create_campaign(session, data=body, user=me.user)
    run = service.queue_answers(session, campaign=campaign)
    session.commit()
    service.offer_answers(session, run=run)
    return service.campaign_read(session, campaign)


@router.get("/review-campaigns", response_model=Page[CampaignRead])
def list_campaigns(
    session: SessionDep,
    me: CurrentReader,
    limit: Limit = 50,
    offset: Offset = 0,
    project_id: uuid.UUID | None = None,
) -> Page[CampaignRead]:
    rows, total = service.list_campaigns(
        session, user=me.user, project_id=project_id, limit=limit, offset=offset
    )
    return Page(
        items=[service.campaign_read(session, c) for c in rows],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/review-campaigns/{campaign_id}", response_model=CampaignRead)
def get_campaign(campaign_id: uuid.UUID, session: SessionDep, me: CurrentReader) -> CampaignRead:
    return service.campaign_read(session, service.campaign_for(session, me.user, campaign_id))


@router.post("/review-campaigns/{campaign_id}/reviewers", response_model=CampaignRead)
def add_reviewer(
    campaign_id: uuid.UUID, body: ReviewerAdd, session: SessionDep, me: CurrentTrainer
) -> CampaignRead:
    """Add a reviewer (an existing account); in an open campaign they get items at once."""
    campaign = service.campaign_for(session, me.user, campaign_id)
    service.add_reviewer(session, campaign=campaign, email=body.email)
    session.commit()
    return service.campaign_read(session, campaign)


@router.post("/review-campaigns/{campaign_id}/prompts", response_model=CampaignRead)
def add_prompts(
    campaign_id: uuid.UUID, body: PromptsAdd, session: SessionDep, me: CurrentTrainer
) -> CampaignRead:
    """Prompts typed by the owner; both models answer them on a worker, then they are
    assigned like the others."""
    campaign = service.campaign_for(session, me.user, campaign_id)
    service.add_prompts(session, campaign=campaign, prompts=body.prompts)
    run = service.queue_answers(session, campaign=campaign)
    session.commit()
    service.offer_answers(session, run=run)
    return service.campaign_read(session, campaign)


@router.post("/review-campaigns/{campaign_id}/open", response_model=CampaignRead)
def open_campaign(campaign_id: uuid.UUID, session: SessionDep, me: CurrentTrainer) -> CampaignRead:
    campaign = service.campaign_for(session, me.user, campaign_id)
    service.open_campaign(session, campaign=campaign)
    session.commit()
    return service.campaign_read(session, campaign)


@router.post("/review-campaigns/{campaign_id}/close", response_model=CampaignRead)
def close_campaign(campaign_id: uuid.UUID, session: SessionDep, me: CurrentTrainer) -> CampaignRead:
    """Close: ratings are final, and results count towards the project's verdict as final."""
    campaign = service.campaign_for(session, me.user, campaign_id)
    service.close_campaign(session, campaign=campaign)
    session.commit()
    return service.campaign_read(session, campaign)


@router.get("/review-campaigns/{campaign_id}/results")
def campaign_results(campaign_id: uuid.UUID, session: SessionDep, me: CurrentReader) -> dict:
    """Win rate (Wilson 95% interval), mean rating per criterion (t interval), agreement
    (Fleiss' kappa, Krippendorff's alpha; Cohen's kappa for two reviewers), per-reviewer
    counts and the items reviewers disagree on most."""
    campaign = service.campaign_for(session, me.user, campaign_id)
    return review_results.results(session, campaign=campaign)


@router.get(
    "/review-campaigns/{campaign_id}/export",
    responses={200: {"content": {"text/csv": {}, "application/x-ndjson": {}}}},
)
def export_ratings(
    campaign_id: uuid.UUID,
    session: SessionDep,
    me: CurrentReader,
    format: Annotated[Literal["csv", "jsonl"], Query()] = "csv",
) -> Response:
    """Every rating with its item, reviewer and de-blinded choice, as CSV or JSON Lines."""
    campaign = service.campaign_for(session, me.user, campaign_id)
    rows = review_results.export_rows(session, campaign=campaign)
    name = f"ratings-{str(campaign.id)[:8]}.{format}"
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    if format == "jsonl":
        return StreamingResponse(
            review_results.jsonl_lines(rows), media_type="application/x-ndjson", headers=headers
        )
    return StreamingResponse(
        review_results.csv_lines(rows, list(campaign.criteria)),
        media_type="text/csv; charset=utf-8",
        headers=headers,
    )


# --- Reviewing ---------------------------------------------------------------------------------


@router.get("/reviews", response_model=list[ReviewerCampaign])
def my_reviews(session: SessionDep, me: CurrentUser) -> list[ReviewerCampaign]:
    """The campaigns you review in, with your progress."""
    return [
        ReviewerCampaign.model_validate(c) for c in reviewing.my_campaigns(session, user=me.user)
    ]


@router.get("/reviews/{campaign_id}/items/{sequence}", response_model=ReviewerItem)
def review_item(
    campaign_id: uuid.UUID, sequence: Sequence, session: SessionDep, me: CurrentUser
) -> ReviewerItem:
    """Item `sequence` of your queue: the prompt, the reference if any, and the answers as
    left and right (which model wrote which is not told)."""
    campaign = reviewing.reviewer_campaign(session, me.user, campaign_id)
    return reviewing.reviewer_item(session, campaign=campaign, user=me.user, sequence=sequence)


@router.put("/reviews/{campaign_id}/items/{sequence}/rating", response_model=ReviewerItem)
def save_rating(
    campaign_id: uuid.UUID,
    sequence: Sequence,
    body: RatingIn,
    session: SessionDep,
    me: CurrentWriter,
) -> ReviewerItem:
    """Save your grade of one item. Idempotent: sending it again (a retry, a second tab)
    updates your one rating of the item."""
    campaign = reviewing.reviewer_campaign(session, me.user, campaign_id)
    reviewing.save_rating(session, campaign=campaign, user=me.user, sequence=sequence, body=body)
    session.commit()
    return reviewing.reviewer_item(session, campaign=campaign, user=me.user, sequence=sequence)
