"""Celery task that answers a review campaign's typed prompts with both of its models."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.config import get_settings
from app.core.db import session_scope
from app.models import CampaignStatus, Evaluation, ItemStatus, ReviewCampaign, ReviewItem
from app.services import leases
from app.services.reviews import campaigns as service
from worker.celery_app import ANSWER_REVIEW_ITEMS, celery_app
from worker.evaluation.run import Example, generate_answers
from worker.spec.decoding import DecodingSettings
from worker.tasks import crashed
from worker.tasks.evaluation import candidates_from
from worker.tasks.runtime import Lease
from worker.training import TrainingError


@celery_app.task(name=ANSWER_REVIEW_ITEMS)
def answer_review_items(run_id: str) -> str:
    """Generate both answers of every item still waiting for them, with the decoding settings
    the campaign's evaluation used. Idempotent: answered items are not touched again."""
    settings = get_settings()
    lease = Lease(leases.REVIEW_ANSWERS, uuid.UUID(run_id))
    with session_scope() as session:
        run = lease.claim(session)
        if run is None:
            return "skipped"
        campaign_id = run.campaign_id
        campaign = session.get(ReviewCampaign, campaign_id)
        evaluation = (
            session.get(Evaluation, campaign.evaluation_id)
            if campaign is not None and campaign.evaluation_id
            else None
        )
        items = (
            session.scalars(
                select(ReviewItem)
                .where(
                    ReviewItem.campaign_id == run.campaign_id,
                    ReviewItem.status == ItemStatus.answering,
                )
                .order_by(ReviewItem.position)
            ).all()
            if campaign is not None
            else []
        )
        problem = None
        if campaign is None or evaluation is None or not items:
            problem = "nothing to answer"
        else:
            stored = {c["key"]: c for c in evaluation.candidates}
            keys = [campaign.model_a["key"]] + (
                [campaign.model_b["key"]] if campaign.model_b else []
            )
            try:
                candidates = candidates_from(session, settings, [stored[k] for k in keys])
            except (TrainingError, KeyError) as exc:
                problem = str(exc)
            decoding_values = dict((evaluation.results or {}).get("decoding") or {})
            decoding_values["stop"] = tuple(decoding_values.get("stop") or ())
            decoding = DecodingSettings.model_validate(decoding_values)
            work = [
                (item.id, Example(messages=list(item.messages), reference="")) for item in items
            ]
    if problem == "nothing to answer":
        lease.finish("succeeded")
        return problem
    if problem is not None:
        lease.finish("failed", error=problem, then=lambda s: _set_all(s, work, {}, [], problem))
        return "failed"

    error = None
    answers: dict[str, list[str]] = {}
    with lease:
        try:
            generated = generate_answers(
                candidates,
                [example for _, example in work],
                decoding,
                model_cache_dir=settings.model_cache_dir,
                allow_downloads=settings.allow_hub_downloads,
            )
            answers = {key: [g.text for g in gens] for key, gens in generated.items()}
        except TrainingError as exc:
            error = str(exc)
        except Exception as exc:  # the items must not wait forever
            error = crashed(f"answering review run {run_id}", exc)
    if (stopped := lease.give_up_or_hand_back()) is not None:
        return stopped

    def record(session: Session) -> None:
        _set_all(session, work, answers, keys, error)
        campaign = session.get(ReviewCampaign, campaign_id)
        if campaign is not None and campaign.status == CampaignStatus.open:
            service.assign(session, campaign=campaign)

    lease.finish("failed" if error else "succeeded", error=error, then=record)
    return "failed" if error else "answered"


def _set_all(
    session: Session,
    work: list[tuple[int, Example]],
    answers: dict[str, list[str]],
    keys: list[str],
    error: str | None,
) -> None:
    for index, (item_id, _) in enumerate(work):
        service.set_answers(
            session,
            item_id=item_id,
            answer_a=answers[keys[0]][index] if not error else "",
            answer_b=answers[keys[1]][index] if not error and len(keys) > 1 else None,
            error=error,
        )
