"""Celery task that answers a review campaign's typed prompts with both of its models."""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import select

from app.core.config import get_settings
from app.core.db import session_scope
from app.models import CampaignStatus, Evaluation, ItemStatus, ReviewCampaign, ReviewItem
from app.services import reviews as service
from worker.celery_app import ANSWER_REVIEW_ITEMS, celery_app
from worker.evaluation.run import Example, generate_answers
from worker.evaluation.settings import DecodingSettings
from worker.tasks import crashed
from worker.tasks.evaluation import candidates_from
from worker.training import TrainingError

log = logging.getLogger(__name__)


@celery_app.task(name=ANSWER_REVIEW_ITEMS)
def answer_review_items(campaign_id: str) -> str:
    """Generate both answers of every item still waiting for them, with the decoding settings
    the campaign's evaluation used. Idempotent: answered items are not touched again."""
    settings = get_settings()
    cid = uuid.UUID(campaign_id)
    with session_scope() as session:
        campaign = session.get(ReviewCampaign, cid)
        if campaign is None:
            return "gone"
        evaluation = (
            session.get(Evaluation, campaign.evaluation_id) if campaign.evaluation_id else None
        )
        items = session.scalars(
            select(ReviewItem)
            .where(ReviewItem.campaign_id == cid, ReviewItem.status == ItemStatus.answering)
            .order_by(ReviewItem.position)
        ).all()
        if not items or evaluation is None:
            return "nothing to answer"
        stored = {c["key"]: c for c in evaluation.candidates}
        keys = [campaign.model_a["key"]] + ([campaign.model_b["key"]] if campaign.model_b else [])
        try:
            candidates = candidates_from(session, settings, [stored[k] for k in keys])
        except (TrainingError, KeyError) as exc:
            for item in items:
                service.set_answers(
                    session, item_id=item.id, answer_a="", answer_b=None, error=str(exc)
                )
            return "failed"
        decoding_values = dict((evaluation.results or {}).get("decoding") or {})
        decoding_values["stop"] = tuple(decoding_values.get("stop") or ())
        decoding = DecodingSettings.model_validate(decoding_values)
        work = [(item.id, Example(messages=list(item.messages), reference="")) for item in items]

    error = None
    answers: dict[str, list[str]] = {}
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
        error = crashed(f"answering campaign {campaign_id}", exc)

    with session_scope() as session:
        for index, (item_id, _) in enumerate(work):
            service.set_answers(
                session,
                item_id=item_id,
                answer_a=answers[keys[0]][index] if not error else "",
                answer_b=answers[keys[1]][index] if not error and len(keys) > 1 else None,
                error=error,
            )
        session.flush()
        campaign = session.get(ReviewCampaign, cid)
        if campaign is not None and campaign.status == CampaignStatus.open:
            service.assign(session, campaign=campaign)
    return "failed" if error else "answered"
