"""Words that are stored or computed in English, shown in the reader's language.

Some values are kept as they are written by code that knows no reader: a review campaign's
default criteria, the evaluations' default model labels, the metrics' names (worker/spec), a
dataset's format, the parts of a length table. The API and the CLI keep them as stored; pages
show them through these filters, which translate the values they know and leave the others
(a user's own words) as they are.
"""

from __future__ import annotations

from typing import Any

from app.core.i18n import N_, _
from app.services.evaluations.candidates import shown_label
from app.services.evaluations.words import explanation_text, metric_title
from app.services.jobs.events import chosen_settings, event_text

# A review campaign's default rubric (app/schemas/review.py): stored in English when a campaign
# comes from the API; the Chinese form proposes them in Chinese.
DEFAULT_CRITERIA = {"accuracy": N_("accuracy"), "style": N_("style"), "format": N_("format")}

REVIEW_MODES = {
    "both": N_("pairwise and ratings"),
    "pairwise": N_("pairwise"),
    "rating": N_("ratings"),
}


def _known(words: dict[str, str], value: object) -> str:
    """``value`` in the reader's language when ``words`` knows it, else as it is."""
    text = str(value)
    return _(words[text]) if text in words else text


def criterion(name: object) -> str:
    """A rubric criterion: a default one in the reader's language, a user's own as written."""
    return _known(DEFAULT_CRITERIA, name)


def default_criteria() -> list[str]:
    """The review form's proposed criteria, in the reader's language."""
    return [_(word) for word in DEFAULT_CRITERIA.values()]


def review_mode(mode: object) -> str:
    return _known(REVIEW_MODES, mode)


def model_label(candidate: Any) -> str:
    """An evaluated model's label (an evaluation's or a campaign's candidate)."""
    if not isinstance(candidate, dict):
        return "" if candidate is None else str(candidate)
    return shown_label(candidate)


# A dataset's format as stored: names of their own (alpaca, ShareGPT) read the same everywhere;
# these are words.
FORMAT_WORDS = {
    "columns": N_("own columns"),
    "chat": N_("chat"),
    "prompt_completion": N_("prompt / completion"),
    "self_instruct": N_("self-instruct"),
}


def dataset_format(name: object) -> str:
    return _known(FORMAT_WORDS, name)


# The roles of a conversation's messages (chat data, review prompts).
MESSAGE_ROLES = {"system": N_("system"), "user": N_("user"), "assistant": N_("assistant")}


def message_role(role: object) -> str:
    return _known(MESSAGE_ROLES, role)


def chosen(settings: Any) -> str:
    """What "auto" chose, each setting by its label: "Learning rate 0.0008, Epochs 3"."""
    return chosen_settings(settings) if isinstance(settings, dict) else ""


def event(row: Any) -> str:
    """A job event's message in the reader's language."""
    return event_text(str(row.message), row.data)


# What a job's artifact or export holds.
ARTIFACT_KINDS = {"adapter": N_("adapter"), "merged": N_("merged model")}


def artifact_kind(kind: object) -> str:
    return _known(ARTIFACT_KINDS, kind)


def verdict_explanation(verdict: Any) -> str:
    """A success criterion's verdict explained in the reader's language."""
    return explanation_text(verdict) if isinstance(verdict, dict) else str(verdict)


FILTERS: dict[str, Any] = {
    "verdict_explanation": verdict_explanation,
    "artifact_kind": artifact_kind,
    "chosen_settings": chosen,
    "event_text": event,
    "message_role": message_role,
    "dataset_format": dataset_format,
    "metric_title": metric_title,
    "model_label": model_label,
    "criterion": criterion,
    "review_mode": review_mode,
}
GLOBALS: dict[str, Any] = {"default_criteria": default_criteria}
