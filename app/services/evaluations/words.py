"""An evaluation's words in the reader's language: the metrics' names and a success
criterion's verdict explained.

The metrics' names are worker/spec/metrics.py's ``METRIC_TITLES`` (worker/spec marks nothing:
the worker runs without the web stack); BLEU and ROUGE read the same everywhere.

worker/spec/criteria.py judges each criterion and explains it in English ("met: rougeL gain
over baseline 0.191 ≥ 0.010 (95% CI 0.095–0.321)"); the API keeps that text. Pages and the CLI
show it through :func:`explanation_text`, which reads the explanation's parts back and says
them in the reader's language. The status itself is shown beside it, so the translated text
leaves out the leading "met: " / "not met: ". What it does not recognise is shown as it is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from app.core.i18n import N_, _, current_locale
from app.core.messages import translate_message
from worker.spec.metrics import METRIC_TITLES

METRIC_WORDS = {
    "exact_match": N_("Exact match"),
    "token_f1": N_("Token F1"),
    "perplexity": N_("Perplexity"),
}


def metric_title(metric: object) -> str:
    """A metric's name for a person: "perplexity" → "Perplexity" (“困惑度”)."""
    key = str(metric)
    if key in METRIC_WORDS:
        return _(METRIC_WORDS[key])
    return METRIC_TITLES.get(key, key)


_NUMBER = r"-?[\d.]+(?:e[-+]?\d+)?"
_CI = rf"95% CI (?P<low>{_NUMBER})–(?P<high>{_NUMBER})"
_UNSURE = ", but the 95% interval includes the threshold"
_OPEN = " (the review campaign is still open)"
_MET = re.compile(
    rf"^met: (?P<name>.+) (?P<value>{_NUMBER}) (?P<op>\S+) (?P<limit>{_NUMBER})"
    rf"(?: \({_CI}\))?(?P<unsure>{re.escape(_UNSURE)})?(?P<open>{re.escape(_OPEN)})?$"
)
_NOT_MET = re.compile(
    rf"^not met: (?P<name>.+) (?P<value>{_NUMBER}) (?P<op>\S+) (?P<limit>{_NUMBER}) "
    rf"\((?P<gap>short|off) by (?P<by>{_NUMBER})\)(?:; {_CI})?"
    rf"(?P<unsure>{re.escape(_UNSURE)})?(?P<open>{re.escape(_OPEN)})?$"
)
_NAMES = [
    (re.compile(r"^(?P<metric>\S+) gain over baseline$"), N_("%(metric)s gain over baseline")),
    (re.compile(r"^(?P<metric>\S+) drop from baseline$"), N_("%(metric)s drop from baseline")),
    (re.compile(r"^human win rate$"), N_("human win rate")),
    (re.compile(r"^human preference$"), N_("human preference")),
    (re.compile(r"^human rating$"), N_("human rating")),
]
_PLAIN = {
    "waits for human review": N_("waits for human review"),
    "not measured: this evaluation has no prompting baseline": N_(
        "this evaluation has no prompting baseline"
    ),
    "not measured: no evaluation results yet": N_("no evaluation results yet"),
}
_NOT_MEASURED = re.compile(r"^not measured: (?P<metric>\S+) was not measured in this evaluation$")


def _name(name: str) -> str:
    for pattern, message_id in _NAMES:
        found = pattern.match(name)
        if found is not None:
            values = {k: metric_title(v) for k, v in found.groupdict().items()}
            return _(message_id, **values) if values else _(message_id)
    return metric_title(name)


def explanation_text(verdict: Mapping[str, Any]) -> str:
    """The verdict's explanation for a person, without the status it starts with (``met: ``,
    ``not met: ``: pages and the CLI show the status beside it). English: as the worker wrote
    it otherwise."""
    text = str(verdict.get("explanation") or "")
    if current_locale() == "en":
        if _MET.match(text) or _NOT_MET.match(text):
            return text.partition(": ")[2]
        return text
    if text in _PLAIN:
        return _(_PLAIN[text])
    found = _NOT_MEASURED.match(text)
    if found is not None:
        metric = metric_title(found["metric"])
        return _("%(metric)s was not measured in this evaluation", metric=metric)
    found = _MET.match(text) or _NOT_MET.match(text)
    if found is None:
        return translate_message(text)  # an unreadable criterion's message, or as it is
    parts = found.groupdict()
    values = {
        "name": _name(parts["name"]),
        "value": parts["value"],
        "op": parts["op"],
        "limit": parts["limit"],
    }
    if parts.get("by") is not None:
        message = _(
            "%(name)s %(value)s %(op)s %(limit)s (short by %(by)s)", **values, by=parts["by"]
        )
    else:
        message = _("%(name)s %(value)s %(op)s %(limit)s", **values)
    if parts.get("low") is not None:
        message += _(
            "; %(level)s interval %(low)s–%(high)s",
            level="95%",
            low=parts["low"],
            high=parts["high"],
        )
    if parts.get("unsure"):
        message += _(", but the %(level)s interval includes the threshold", level="95%")
    if parts.get("open"):
        message += _(" (the review campaign is still open)")
    return message
