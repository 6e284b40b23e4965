"""Review pages: the reviewer's queue and the one-item-at-a-time review page, and for the
project's owners, starting a campaign from an evaluation and following its results."""

from __future__ import annotations

import uuid
from functools import lru_cache
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markdown_it import MarkdownIt
from markupsafe import Markup
from pydantic import ValidationError

from app.api.deps import (
    CurrentReader,
    CurrentTrainer,
    CurrentUser,
    CurrentWriter,
    SessionDep,
    make_router,
)
from app.core.errors import FieldError, InvalidInput, TunelabError
from app.core.i18n import N_, gettext
from app.models import Evaluation, Project, ReviewCampaign
from app.schemas.review import CampaignCreate, RatingIn
from app.services import access
from app.services.reviews import campaigns as service
from app.services.reviews import results as review_results
from app.services.reviews import reviewing
from app.web import form_tokens
from app.web.rendering import FormFields, render
from worker.spec.metrics import detect_language

router = make_router(include_in_schema=False)


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    # CommonMark with raw HTML off: a model's answer is untrusted text, so any tag in it is
    # shown as text, and markdown-it refuses javascript:/data: link targets.
    return MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


def markdown(text: str | None) -> Markup:
    return Markup(_markdown().render(text or ""))


def lang_of(text: str | None) -> str:
    """The language attribute for a text block, so Chinese is set with Chinese fonts and
    line breaking (the page itself is English)."""
    language = detect_language(text or "")
    return {"zh": "zh-Hans", "ja": "ja", "ko": "ko"}.get(language, "")


# --- Reviewers --------------------------------------------------------------------------------


@router.get("/reviews")
def reviews_page(request: Request, session: SessionDep, me: CurrentUser) -> HTMLResponse:
    return render(
        request, "reviews/list.html", campaigns=reviewing.my_campaigns(session, user=me.user)
    )


@router.get("/reviews/{campaign_id}")
def next_item(campaign_id: uuid.UUID, session: SessionDep, me: CurrentUser) -> Response:
    """Carry on where the reviewer stopped: their first item without a rating."""
    campaign = reviewing.reviewer_campaign(session, me.user, campaign_id)
    upcoming = reviewing.progress(session, campaign=campaign, user=me.user)["next_sequence"]
    if upcoming is None:
        return RedirectResponse(f"/reviews/{campaign_id}/done", status_code=303)
    return RedirectResponse(f"/reviews/{campaign_id}/{upcoming}", status_code=303)


@router.get("/reviews/{campaign_id}/done")
def done_page(
    campaign_id: uuid.UUID, request: Request, session: SessionDep, me: CurrentUser
) -> HTMLResponse:
    campaign = reviewing.reviewer_campaign(session, me.user, campaign_id)
    mine = reviewing.progress(session, campaign=campaign, user=me.user)
    return render(request, "reviews/done.html", campaign=campaign, progress=mine)


@router.get("/reviews/{campaign_id}/{sequence}")
def review_page(
    campaign_id: uuid.UUID,
    sequence: int,
    request: Request,
    session: SessionDep,
    me: CurrentUser,
) -> HTMLResponse:
    campaign = reviewing.reviewer_campaign(session, me.user, campaign_id)
    item = reviewing.reviewer_item(session, campaign=campaign, user=me.user, sequence=sequence)
    return render(request, "reviews/item.html", item=item, markdown=markdown, lang_of=lang_of)


@router.post("/reviews/{campaign_id}/{sequence}")
def save_from_form(
    campaign_id: uuid.UUID,
    sequence: int,
    request: Request,
    session: SessionDep,
    me: CurrentWriter,
    form: FormFields,
) -> Response:
    """The review form without JavaScript: save, then the next item."""
    campaign = reviewing.reviewer_campaign(session, me.user, campaign_id)
    scores: dict[str, dict[str, int]] = {}
    for name, value in form.items():
        side, _, criterion = name.removeprefix("score.").partition(".")
        if name.startswith("score.") and value.isdigit():
            scores.setdefault(side, {})[criterion] = int(value)
    try:
        body = RatingIn.model_validate(
            {
                "choice": form.get("choice") or None,
                "scores": scores,
                "comment": form.get("comment", ""),
            }
        )
        reviewing.save_rating(
            session, campaign=campaign, user=me.user, sequence=sequence, body=body
        )
    except (ValidationError, TunelabError) as exc:
        session.rollback()
        item = reviewing.reviewer_item(session, campaign=campaign, user=me.user, sequence=sequence)
        message = exc.message if isinstance(exc, TunelabError) else gettext("check your choices")
        return render(
            request,
            "reviews/item.html",
            422,
            item=item,
            markdown=markdown,
            lang_of=lang_of,
            form_error=message,
            sent=form,
        )
    session.commit()
    target = sequence + 1 if form.get("go") != "previous" else max(1, sequence - 1)
    item = reviewing.reviewer_item(session, campaign=campaign, user=me.user, sequence=sequence)
    if form.get("go") != "previous" and sequence >= item.total:
        return RedirectResponse(f"/reviews/{campaign_id}/done", status_code=303)
    return RedirectResponse(f"/reviews/{campaign_id}/{target}", status_code=303)


# --- Owners -----------------------------------------------------------------------------------


@router.post("/evaluations/{evaluation_id}/campaigns")
def start_campaign(
    evaluation_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    me: CurrentTrainer,
    form: FormFields,
) -> Response:
    """The evaluation page's "send to human review" form."""
    evaluation = access.evaluation_for(session, me.user, evaluation_id)
    earlier = form_tokens.created_before(session, form=form, user=me.user, kind="campaign")
    if earlier:  # back and resubmit: the campaign this very form already started
        return RedirectResponse(f"/campaigns/{earlier}", status_code=303)
    try:
        body = _campaign_request(evaluation, form)
        campaign = service.create_campaign(session, data=body, user=me.user)
        run = service.queue_answers(session, campaign=campaign)
    except InvalidInput as exc:
        session.rollback()
        return render(
            request,
            "reviews/campaign_error.html",
            422,
            evaluation=evaluation,
            message=exc.message,
            errors=exc.errors,
            campaign_form=form,
        )
    kept = form_tokens.remember(
        session, form=form, user=me.user, kind="campaign", object_id=campaign.id
    )
    if kept != campaign.id:
        return RedirectResponse(f"/campaigns/{kept}", status_code=303)
    session.commit()
    service.offer_answers(session, run=run)
    return RedirectResponse(f"/campaigns/{campaign.id}", status_code=303)


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.replace(",", "\n").splitlines() if line.strip()]


def _whole_number(form: dict[str, str], field: str) -> int | None:
    text = form.get(field, "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise InvalidInput(
            N_("check the review form"),
            errors=[FieldError(field=field, message=N_("write a whole number, e.g. 1"))],
        ) from None


def _campaign_request(evaluation: Evaluation, form: dict[str, str]) -> CampaignCreate:
    per_item = _whole_number(form, "reviewers_per_item")
    max_items = _whole_number(form, "max_items")
    try:
        return CampaignCreate.model_validate(
            {
                "project_id": evaluation.project_id,
                "evaluation_id": evaluation.id,
                "name": form.get("name") or "Review",
                "instructions": form.get("instructions", ""),
                "mode": form.get("mode") or "both",
                "criteria": _lines(form.get("criteria", "")),
                "reviewers_per_item": 1 if per_item is None else per_item,
                "max_items": max_items,
                "reviewers": _lines(form.get("reviewers", "")),
                "prompts": [p for p in form.get("prompts", "").splitlines() if p.strip()],
            }
        )
    except (ValidationError, ValueError) as exc:
        errors = (
            [
                FieldError(field=".".join(str(p) for p in e["loc"]), message=e["msg"])
                for e in exc.errors()
            ]
            if isinstance(exc, ValidationError)
            else [FieldError(field="form", message=str(exc))]
        )
        raise InvalidInput(N_("check the review form"), errors=errors) from None


def _campaign_context(session: SessionDep, campaign: ReviewCampaign) -> dict[str, Any]:
    return {
        "campaign": campaign,
        "project": session.get(Project, campaign.project_id),
        "counts": service.campaign_counts(session, campaign),
        "results": review_results.results(session, campaign=campaign),
        "markdown": markdown,
    }


@router.get("/campaigns/{campaign_id}")
def campaign_page(
    campaign_id: uuid.UUID, request: Request, session: SessionDep, me: CurrentReader
) -> HTMLResponse:
    campaign = service.campaign_for(session, me.user, campaign_id)
    return render(request, "reviews/campaign.html", **_campaign_context(session, campaign))


@router.post("/campaigns/{campaign_id}/{action}")
def campaign_action(
    campaign_id: uuid.UUID,
    action: str,
    request: Request,
    session: SessionDep,
    me: CurrentTrainer,
    form: FormFields,
) -> Response:
    """Add a reviewer or typed prompts, open or close the campaign."""
    campaign = service.campaign_for(session, me.user, campaign_id)
    try:
        if action == "reviewers":
            for email in _lines(form.get("email", "")):
                service.add_reviewer(session, campaign=campaign, email=email)
        elif action == "prompts":
            service.add_prompts(
                session, campaign=campaign, prompts=form.get("prompts", "").splitlines()
            )
        elif action == "open":
            service.open_campaign(session, campaign=campaign)
        elif action == "close":
            service.close_campaign(session, campaign=campaign)
        else:
            return RedirectResponse(f"/campaigns/{campaign_id}", status_code=303)
    except TunelabError as exc:
        session.rollback()
        context = _campaign_context(session, campaign)
        return render(
            request,
            "reviews/campaign.html",
            exc.status_code,
            action_error=exc.message,
            action=action,
            action_form=form,
            **context,
        )
    run = service.queue_answers(session, campaign=campaign) if action == "prompts" else None
    session.commit()
    service.offer_answers(session, run=run)
    return RedirectResponse(f"/campaigns/{campaign_id}", status_code=303)
