"""Human review campaigns: items from an evaluation (or typed prompts), reviewers and their
blind assignments, and ratings written exactly once per assignment.

Blindness: a reviewer sees answers as "left" and "right". Which model is on which side is
drawn per (item, reviewer) and kept on the assignment; ratings are stored in terms of model A
and model B, so nothing a reviewer can read names a model.
"""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from typing import Any

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.orm import Session

from app.core.config import get_settings
from app.core.db import utcnow
from app.core.errors import Conflict, InvalidInput, NotFound
from app.models import (
    CampaignReviewer,
    CampaignStatus,
    EvalStatus,
    Evaluation,
    ItemStatus,
    Rating,
    ReviewAnswerRun,
    ReviewAssignment,
    ReviewCampaign,
    ReviewItem,
    User,
)
from app.schemas.review import CampaignCreate, CampaignRead
from app.services import access, leases, queue
from app.services import evaluations as evaluations_service
from app.services.accounts import users as accounts

SIDES = ("left", "right")


# --- Setting up --------------------------------------------------------------------------------


def create_campaign(session: Session, *, data: CampaignCreate, user: User) -> ReviewCampaign:
    """A campaign over an evaluation's examples; opened at once when it has reviewers."""
    project = access.project_for(session, user, data.project_id)
    evaluation = session.get(Evaluation, data.evaluation_id)
    if evaluation is None or evaluation.project_id != project.id:
        raise NotFound("evaluation not found in this project")
    if evaluation.status != EvalStatus.succeeded:
        raise InvalidInput.on(
            "evaluation_id", f"the evaluation has {evaluation.status}; wait for it"
        )
    candidates = {c["key"]: c for c in evaluation.candidates}
    results = evaluation.results or {}
    key_a = data.model_a or results.get("baseline") or evaluation.candidates[0]["key"]
    key_b = data.model_b
    if key_b is None and data.mode != "rating":
        key_b = results.get("subject")
        if key_b == key_a:
            key_b = next((k for k in candidates if k != key_a), None)
    for field, key in (("model_a", key_a), ("model_b", key_b)):
        if key is not None and key not in candidates:
            raise InvalidInput.on(
                field, f"{key!r} is not a model of this evaluation ({', '.join(candidates)})"
            )
    if data.mode != "rating" and (key_b is None or key_b == key_a):
        raise InvalidInput.on("model_b", "a pairwise campaign needs two different models")
    criteria = [c.strip() for c in data.criteria if c.strip()]
    if data.mode != "pairwise" and not criteria:
        raise InvalidInput.on("criteria", "rating needs at least one rubric criterion")
    if len(set(criteria)) != len(criteria):
        raise InvalidInput.on("criteria", "each criterion once")
    reviewers = [
        _reviewer(session, email, f"reviewers.{i}") for i, email in enumerate(data.reviewers)
    ]
    if data.open and not reviewers:
        raise InvalidInput.on("reviewers", "name at least one reviewer to open the campaign")

    campaign = ReviewCampaign(
        project_id=project.id,
        evaluation_id=evaluation.id,
        name=data.name,
        instructions=data.instructions,
        mode=data.mode,
        criteria=criteria if data.mode != "pairwise" else [],
        reviewers_per_item=data.reviewers_per_item,
        model_a=_model(candidates[key_a]),
        model_b=_model(candidates[key_b]) if key_b else None,
        status=CampaignStatus.draft,
        seed=data.seed,
        created_by_id=user.id,
    )
    session.add(campaign)
    session.flush()
    samples = evaluations_service.all_samples(session, evaluation_id=evaluation.id)
    if data.max_items is not None:
        samples = samples[: data.max_items]
    for index, sample in enumerate(samples):
        session.add(
            ReviewItem(
                campaign_id=campaign.id,
                position=index,
                source="evaluation",
                eval_sample_position=sample.position,
                messages=sample.messages,
                prompt=sample.prompt,
                reference=sample.reference,
                answer_a=sample.outputs.get(key_a, ""),
                answer_b=sample.outputs.get(key_b) if key_b else None,
                status=ItemStatus.ready,
            )
        )
    _add_typed(session, campaign, data.prompts, start=len(samples))
    for reviewer in reviewers:
        session.add(CampaignReviewer(campaign_id=campaign.id, user_id=reviewer.id))
    session.flush()
    if data.open:
        open_campaign(session, campaign=campaign)
    return campaign


def _model(candidate: dict[str, Any]) -> dict[str, Any]:
    keep = ("key", "label", "kind", "base_model", "job_id", "checkpoint", "method", "k_shot")
    return {k: candidate.get(k) for k in keep} | {"system_prompt": candidate.get("system_prompt")}


def _reviewer(session: Session, email: str, field: str) -> User:
    try:
        return accounts.find_user(session, email=email)
    except NotFound:
        raise InvalidInput.on(
            field, f"no user with the e-mail {email!r}; create the account first"
        ) from None


def _add_typed(
    session: Session, campaign: ReviewCampaign, prompts: list[str], *, start: int
) -> int:
    """Items for prompts typed by the project owner; a worker writes both models' answers."""
    added = 0
    for offset, text in enumerate(p.strip() for p in prompts):
        if not text:
            continue
        session.add(
            ReviewItem(
                campaign_id=campaign.id,
                position=start + offset,
                source="typed",
                messages=[{"role": "user", "content": text}],
                prompt=text,
                reference=None,
                answer_a="",
                answer_b="" if campaign.model_b else None,
                status=ItemStatus.answering,
            )
        )
        added += 1
    session.flush()
    return added


def add_prompts(session: Session, *, campaign: ReviewCampaign, prompts: list[str]) -> int:
    """Add typed prompts to a campaign that is not closed; returns how many were added."""
    if campaign.status == CampaignStatus.closed:
        raise Conflict("the campaign is closed")
    last = session.scalar(
        select(func.max(ReviewItem.position)).where(ReviewItem.campaign_id == campaign.id)
    )
    added = _add_typed(session, campaign, prompts, start=(last if last is not None else -1) + 1)
    if not added:
        raise InvalidInput.on("prompts", "every prompt was empty")
    return added


def queue_answers(session: Session, *, campaign: ReviewCampaign) -> ReviewAnswerRun | None:
    """A worker's run to answer the campaign's typed prompts, if some wait and no run is
    already waiting or answering; the caller offers it to the broker after the commit."""
    waiting = session.scalar(
        select(func.count())
        .select_from(ReviewItem)
        .where(ReviewItem.campaign_id == campaign.id, ReviewItem.status == ItemStatus.answering)
    )
    if not waiting:
        return None
    active = session.scalar(
        select(ReviewAnswerRun.id).where(
            ReviewAnswerRun.campaign_id == campaign.id,
            ReviewAnswerRun.status.in_(("queued", "running")),
        )
    )
    if active is not None:
        return None  # it answers every prompt still waiting when it runs
    evaluation = session.get(Evaluation, campaign.evaluation_id) if campaign.evaluation_id else None
    run = ReviewAnswerRun(
        campaign_id=campaign.id,
        queue=evaluation.queue if evaluation is not None else get_settings().default_queue,
        queued_at=utcnow(),
    )
    session.add(run)
    session.flush()
    return run


def offer_answers(session: Session, *, run: ReviewAnswerRun | None) -> None:
    """Hand a committed answering run to the broker (it waits if the broker is down)."""
    if run is not None:
        queue.offer(session, leases.REVIEW_ANSWERS, run.id, run.queue)


def answers_abandoned(session: Session, *, run_id: uuid.UUID, error: str) -> None:
    """The prompts a run could not answer are marked failed, saying why."""
    run = session.get(ReviewAnswerRun, run_id)
    if run is None:
        return
    session.execute(
        update(ReviewItem)
        .where(ReviewItem.campaign_id == run.campaign_id, ReviewItem.status == ItemStatus.answering)
        .values(status=ItemStatus.failed, error=error)
    )


def add_reviewer(session: Session, *, campaign: ReviewCampaign, email: str) -> User:
    """Add a reviewer; in an open campaign they get items that still lack reviewers."""
    if campaign.status == CampaignStatus.closed:
        raise Conflict("the campaign is closed")
    user = _reviewer(session, email, "email")
    exists = session.scalar(
        select(CampaignReviewer.id).where(
            CampaignReviewer.campaign_id == campaign.id, CampaignReviewer.user_id == user.id
        )
    )
    if exists is None:
        session.add(CampaignReviewer(campaign_id=campaign.id, user_id=user.id))
        session.flush()
    if campaign.status == CampaignStatus.open:
        assign(session, campaign=campaign)
    return user


def open_campaign(session: Session, *, campaign: ReviewCampaign) -> None:
    if campaign.status == CampaignStatus.closed:
        raise Conflict("the campaign is closed")
    if not reviewer_ids(session, campaign.id):
        raise InvalidInput.on("reviewers", "add at least one reviewer first")
    campaign.status = CampaignStatus.open
    campaign.opened_at = campaign.opened_at or utcnow()
    assign(session, campaign=campaign)


def close_campaign(session: Session, *, campaign: ReviewCampaign) -> None:
    """Final results; from now on results name which model wrote which answer."""
    if campaign.status == CampaignStatus.closed:
        raise Conflict("the campaign is already closed")
    campaign.status = CampaignStatus.closed
    campaign.closed_at = utcnow()
    session.flush()


def reviewer_ids(session: Session, campaign_id: uuid.UUID) -> list[uuid.UUID]:
    return list(
        session.scalars(
            select(CampaignReviewer.user_id)
            .where(CampaignReviewer.campaign_id == campaign_id)
            .order_by(CampaignReviewer.id)
        ).all()
    )


def assign(session: Session, *, campaign: ReviewCampaign) -> int:
    """Give every ready item to ``reviewers_per_item`` reviewers (fewest assignments first),
    each at the end of the reviewer's queue in a random order, model A on a random side.
    Idempotent: items that already have enough reviewers are left alone."""
    reviewers = reviewer_ids(session, campaign.id)
    if not reviewers:
        return 0
    k = min(campaign.reviewers_per_item, len(reviewers))
    existing = session.execute(
        select(ReviewAssignment.item_id, ReviewAssignment.reviewer_id).where(
            ReviewAssignment.campaign_id == campaign.id
        )
    ).all()
    holders: dict[int, set[uuid.UUID]] = defaultdict(set)
    load: dict[uuid.UUID, int] = {r: 0 for r in reviewers}
    for item_id, reviewer_id in existing:
        holders[item_id].add(reviewer_id)
        load[reviewer_id] = load.get(reviewer_id, 0) + 1
    items = session.scalars(
        select(ReviewItem)
        .where(ReviewItem.campaign_id == campaign.id, ReviewItem.status == ItemStatus.ready)
        .order_by(ReviewItem.position)
    ).all()
    rng = random.Random(f"{campaign.id}:{campaign.seed}:{len(existing)}")
    new: dict[uuid.UUID, list[int]] = defaultdict(list)
    for item in items:
        missing = k - len(holders[item.id])
        if missing <= 0:
            continue
        choices = [r for r in reviewers if r not in holders[item.id]]
        rng.shuffle(choices)  # equal loads are broken at random, not by sign-up order
        for reviewer in sorted(choices, key=lambda r: load[r])[:missing]:
            new[reviewer].append(item.id)
            holders[item.id].add(reviewer)
            load[reviewer] += 1
    added = 0
    for reviewer, item_ids in new.items():
        last = session.scalar(
            select(func.max(ReviewAssignment.sequence)).where(
                ReviewAssignment.campaign_id == campaign.id,
                ReviewAssignment.reviewer_id == reviewer,
            )
        )
        order = random.Random(f"{campaign.id}:{campaign.seed}:{reviewer}:{last}")
        order.shuffle(item_ids)
        for offset, item_id in enumerate(item_ids, start=(last or 0) + 1):
            session.add(
                ReviewAssignment(
                    campaign_id=campaign.id,
                    reviewer_id=reviewer,
                    item_id=item_id,
                    sequence=offset,
                    swapped=order.random() < 0.5,
                )
            )
            added += 1
    session.flush()
    return added


# --- Reading (owners) --------------------------------------------------------------------------


def campaign_for(session: Session, user: User, campaign_id: uuid.UUID) -> ReviewCampaign:
    """A campaign of a project ``user`` may see (owners: trainers and admins)."""
    campaign = session.get(ReviewCampaign, campaign_id)
    if campaign is None:
        raise NotFound("review campaign not found")
    access.project_for(session, user, campaign.project_id)
    return campaign


def list_campaigns(
    session: Session, *, user: User, project_id: uuid.UUID | None, limit: int, offset: int
) -> tuple[list[ReviewCampaign], int]:
    conditions: list[ColumnElement[bool]] = [
        ReviewCampaign.project_id.in_(access.visible_projects(user))
    ]
    if project_id is not None:
        conditions.append(ReviewCampaign.project_id == project_id)
    total = session.scalar(select(func.count()).select_from(ReviewCampaign).where(*conditions))
    rows = session.scalars(
        select(ReviewCampaign)
        .where(*conditions)
        .order_by(ReviewCampaign.created_at.desc(), ReviewCampaign.id)
        .limit(limit)
        .offset(offset)
    ).all()
    return list(rows), total or 0


def campaign_counts(session: Session, campaign: ReviewCampaign) -> dict[str, Any]:
    """Item, assignment and rating counts, and each reviewer's progress."""
    items = dict(
        session.execute(
            select(ReviewItem.status, func.count())
            .where(ReviewItem.campaign_id == campaign.id)
            .group_by(ReviewItem.status)
        ).all()
    )
    per_reviewer = session.execute(
        select(
            User.email,
            func.count(ReviewAssignment.id),
            func.count(Rating.id),
        )
        .select_from(CampaignReviewer)
        .join(User, User.id == CampaignReviewer.user_id)
        .outerjoin(
            ReviewAssignment,
            (ReviewAssignment.campaign_id == campaign.id)
            & (ReviewAssignment.reviewer_id == CampaignReviewer.user_id),
        )
        .outerjoin(Rating, Rating.assignment_id == ReviewAssignment.id)
        .where(CampaignReviewer.campaign_id == campaign.id)
        .group_by(User.email)
        .order_by(User.email)
    ).all()
    reviewers = [{"email": e, "assigned": a, "rated": r} for e, a, r in per_reviewer]
    return {
        "items": sum(items.values()),
        "items_answering": items.get(ItemStatus.answering, 0),
        "reviewers": reviewers,
        "assignments": sum(r["assigned"] for r in reviewers),
        "ratings": sum(r["rated"] for r in reviewers),
    }


def set_answers(
    session: Session, *, item_id: int, answer_a: str, answer_b: str | None, error: str | None
) -> None:
    """A worker's answers to a typed prompt (or why there are none)."""
    session.execute(
        update(ReviewItem)
        .where(ReviewItem.id == item_id, ReviewItem.status == ItemStatus.answering)
        .values(
            answer_a=answer_a,
            answer_b=answer_b,
            status=ItemStatus.failed if error else ItemStatus.ready,
            error=error,
        )
    )


def campaign_read(session: Session, campaign: ReviewCampaign) -> CampaignRead:
    read = CampaignRead.model_validate(campaign)
    for name, value in campaign_counts(session, campaign).items():
        setattr(read, name, value)
    return read
