"""A job's events in the reader's language.

An event is stored once, in English (``job_events.message``: the API and the CLI show it as it
is), by whichever process wrote it. Events that tunelab's services write keep their message id
and its values in the event's ``data`` (``message_id``, ``message_params``), so a page shows
them in its reader's language. The training engine (worker/training) writes its events as plain
English, without the web stack's catalogs; those, and rows written before message ids were kept,
are recognised by their wording below. Anything else is shown as it was stored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from app.core.i18n import N_, _
from app.core.messages import field_label, status_text, translate_message

MESSAGE_ID = "message_id"
MESSAGE_PARAMS = "message_params"

# What the services write (add_event with params).
JOB_CREATED = N_("Job created")
FILES_VALIDATED = N_("Files validated (%(records)s records); queued on '%(queue)s'")
DATA_MISSING = N_("the data of dataset version %(version)s is missing on the server")
CANCELLED_BEFORE_START = N_("Cancelled before it started")
CANCEL_REQUESTED = N_("Cancellation requested; stopping")
RESUMED = N_("Resumed: queued again, from %(checkpoint)s")
QUEUE_UNREACHABLE = N_(
    "The job queue could not be reached; the job waits and is sent as soon as it is back."
)
NO_WORKER_YET = N_(
    "No online worker can run this job yet (queue '%(queue)s'); it waits until one that can starts."
)
CHOSEN = N_("Chosen automatically: %(settings)s")
MADE_THROUGH_OPENAI = N_("Made through the OpenAI-compatible API as %(id)s")
MADE_THROUGH_OPENAI_WITH_RATE = N_(
    "Made through the OpenAI-compatible API as %(id)s; learning_rate_multiplier %(multiplier)s → "
    "learning rate %(rate)s"
)


def chosen_settings(chosen: Mapping[str, Any]) -> str:
    """What "auto" chose, each setting by its label: "Learning rate 0.0008, Epochs 3"."""
    return _(", ").join(f"{field_label(name)} {value}" for name, value in chosen.items())


def stored(message: str, params: Mapping[str, Any] | None) -> tuple[str, dict[str, Any] | None]:
    """The English text of a message id and its values, and the ``data`` that keeps them."""
    if params is None:
        return message, None
    text = message % dict(params) if params else message
    return text, {MESSAGE_ID: message, MESSAGE_PARAMS: dict(params)}


# The engine's, the leases' and older rows' wording: (pattern, message id). Named groups fill
# the message's placeholders.
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(pattern), message_id)
    for pattern, message_id in [
        (r"^Job created$", JOB_CREATED),
        (
            r"^Files validated \((?P<records>\d+) records\); queued on '(?P<queue>[^']*)'$",
            FILES_VALIDATED,
        ),
        (r"^Cancelled before it started$", CANCELLED_BEFORE_START),
        (r"^Cancellation requested; stopping$", CANCEL_REQUESTED),
        (r"^Resumed: queued again, from (?P<checkpoint>\S+)$", RESUMED),
        (r"^The job queue could not be reached; .*$", QUEUE_UNREACHABLE),
        # app/services/leases.py
        (r"^Started on worker (?P<worker>\S+)$", N_("Started on worker %(worker)s")),
        (
            r"^Worker (?P<worker>\S+) is shutting down; handed back to the queue$",
            N_("Worker %(worker)s is shutting down; handed back to the queue"),
        ),
        (
            r"^worker (?P<worker>\S+) stopped responding; re-queued \(attempt (?P<n>\d+)\)$",
            N_("worker %(worker)s stopped responding; re-queued (attempt %(n)s)"),
        ),
        (
            r"^worker (?P<worker>\S+) stopped responding; cancelled as requested$",
            N_("worker %(worker)s stopped responding; cancelled as requested"),
        ),
        # A job's outcome (app/services/jobs.outcome_message).
        (r"^Succeeded$", N_("Succeeded")),
        (r"^Cancelled$", N_("Cancelled")),
        (r"^Failed: (?P<error>.+)$", N_("Failed: %(error)s")),
        # The OpenAI-compatible API's (app/services/openai_compat/jobs.py).
        (
            r"^Made through the OpenAI-compatible API as (?P<id>\S+)$",
            MADE_THROUGH_OPENAI,
        ),
        (
            r"^Made through the OpenAI-compatible API as (?P<id>\S+); learning_rate_multiplier "
            r"(?P<multiplier>\S+) → learning rate (?P<rate>\S+)$",
            MADE_THROUGH_OPENAI_WITH_RATE,
        ),
        (r"^Paused through the API$", N_("Paused through the API")),
        (r"^Cancelled while paused$", N_("Cancelled while paused")),
        (
            r"^Resumed through the API: queued again, from the start \(no checkpoint was saved\)$",
            N_("Resumed through the API: queued again, from the start (no checkpoint was saved)"),
        ),
        (
            r"^Resumed through the API: queued again, from (?P<checkpoint>\S+)$",
            N_("Resumed through the API: queued again, from %(checkpoint)s"),
        ),
        # The engine (worker/training).
        (
            r"^Stopped early at step (?P<step>\d+) of (?P<total>\d+): the validation loss has not "
            r"improved by more than (?P<delta>\S+) in (?P<patience>\d+) evaluations\. The best, "
            r"(?P<best>\S+), was at step (?P<best_step>\d+); the weights saved are the last "
            r"step's \(step \d+\)\.$",
            N_(
                "Stopped early at step %(step)s of %(total)s: the validation loss has not improved "
                "by more than %(delta)s in %(patience)s evaluations. The best, %(best)s, was at "
                "step %(best_step)s; the weights saved are the last step's."
            ),
        ),
        (
            r"^Stopped early at step (?P<step>\d+) of (?P<total>\d+): the validation loss has not "
            r"improved in (?P<patience>\d+) evaluations\. The best, (?P<best>\S+), was at step "
            r"(?P<best_step>\d+); the weights saved are the last step's \(step \d+\)\.$",
            N_(
                "Stopped early at step %(step)s of %(total)s: the validation loss has not improved "
                "in %(patience)s evaluations. The best, %(best)s, was at step %(best_step)s; the "
                "weights saved are the last step's."
            ),
        ),
        (r"^Loading model '(?P<model>.+)' …$", N_("Loading model '%(model)s' …")),
        (
            r"^Converting (?P<name>.+) to safetensors \(once; later runs reuse it\)$",
            N_("Converting %(name)s to safetensors (once; later runs reuse it)"),
        ),
        (
            r"^Prepared (?P<kept>\d+) samples \((?P<dropped>\d+) dropped: too long\)$",
            N_("Prepared %(kept)s samples (%(dropped)s dropped: too long)"),
        ),
        (r"^Validation loss on (?P<kept>\d+) samples$", N_("Validation loss on %(kept)s samples")),
        (
            r"^Model loaded \((?P<total>\S+) parameters, (?P<trainable>\S+) trainable\)$",
            N_("Model loaded (%(total)s parameters, %(trainable)s trainable)"),
        ),
        (r"^Training started$", N_("Training started")),
        (r"^Checkpoint saved at step (?P<step>\d+)$", N_("Checkpoint saved at step %(step)s")),
        (
            r"^Resuming from the checkpoint of step (?P<step>\d+)$",
            N_("Resuming from the checkpoint of step %(step)s"),
        ),
        (r"^Saving adapter$", N_("Saving adapter")),
        (r"^Saving model$", N_("Saving model")),
        (r"^Done$", N_("Done")),
        (
            r"^The tokenizer has no padding token; padding with its end-of-sequence token\.$",
            N_("The tokenizer has no padding token; padding with its end-of-sequence token."),
        ),
        (
            r"^The model has no chat template; using a ChatML-style one \(saved with the "
            r"adapter\)\.$",
            N_(
                "The model has no chat template; using a ChatML-style one (saved with the adapter)."
            ),
        ),
        (
            r"^Early stopping is off: there is no validation data to watch\. .*$",
            N_(
                "Early stopping is off: there is no validation data to watch. Give the dataset "
                "a validation split to use it."
            ),
        ),
        (
            r"^Compiling (?P<layers>\d+) decoder layers \((?P<note>.+)\); the first steps "
            r"include the compile time\.$",
            N_(
                "Compiling %(layers)s decoder layers (%(note)s); the first steps include the "
                "compile time."
            ),
        ),
        (
            r"^(?P<dropped>\d+) of (?P<total>\d+) samples were dropped: no part of their "
            r"answer fits in max_seq_length=(?P<limit>\S+) tokens\. .*$",
            N_(
                "%(dropped)s of %(total)s samples were dropped: no part of their answer fits "
                "in %(limit)s tokens (Max sequence length). Raise it or shorten these samples."
            ),
        ),
        (
            r"^(?P<dropped>\d+) of (?P<total>\d+) validation samples are left out of the "
            r"validation loss: no part of their answer fits in max_seq_length=(?P<limit>\S+)\.$",
            N_(
                "%(dropped)s of %(total)s validation samples are left out of the validation "
                "loss: no part of their answer fits in %(limit)s tokens (Max sequence length)."
            ),
        ),
        (
            r"^Batches are padded, not packed: (?P<note>.+)\.$",
            N_("Batches are padded, not packed: %(note)s."),
        ),
        (
            r"^(?P<lost>\d+) of (?P<fused>\d+) fused layers were replaced during training by "
            r"another library; those layers ran their own \(slower\) forward\.$",
            N_(
                "%(lost)s of %(fused)s fused layers were replaced during training by another "
                "library; those layers ran their own (slower) forward."
            ),
        ),
        # GPU memory: the step retried with half the pass (worker/training/budget.py).
        (
            r"^A forward pass of (?P<tokens>[\d,]+) tokens did not fit in GPU memory: the token "
            r"budget is halved from (?P<old>[\d,]+) to (?P<new>[\d,]+) and the step retried .*$",
            N_(
                "A forward pass of %(tokens)s tokens did not fit in GPU memory: the token budget "
                "is halved from %(old)s to %(new)s and the step retried (this run keeps the "
                "smaller budget; Tokens per micro-batch sets one)."
            ),
        ),
        (
            r"^A padded batch of (?P<old>\d+) rows did not fit in GPU memory: each batch now "
            r"runs in passes of (?P<new>\d+) rows, and the step was retried\.$",
            N_(
                "A padded batch of %(old)s rows did not fit in GPU memory: each batch now runs in "
                "passes of %(new)s rows, and the step was retried."
            ),
        ),
        # An unusable checkpoint (worker/tasks/training.py): its reason, then this.
        (r"^(?P<error>.+) Training starts over\.$", N_("%(error)s Training starts over.")),
        # What the engine says of the base model (worker/training/models.py).
        (
            r"^Model '(?P<name>[^']+)' ships its own code; it is not run: transformers' built-in "
            r"'(?P<type>[^']+)' implementation is used instead\.$",
            N_(
                "Model '%(name)s' ships its own code; it is not run: transformers' built-in "
                "'%(type)s' implementation is used instead."
            ),
        ),
        (
            r"^Loading pickle weights \((?P<files>.+)\): an admin allowed them for this model$",
            N_("Loading pickle weights (%(files)s): an admin allowed them for this model"),
        ),
        (
            r"^Gradient checkpointing is on: .*$",
            N_(
                "Gradient checkpointing is on: the longest samples would not fit in GPU memory "
                "without it (each step recomputes its forward pass, about half as much work "
                "again); a shorter max sequence length avoids it."
            ),
        ),
    ]
]


def event_text(message: str, data: Mapping[str, Any] | None) -> str:
    """An event's message in the reader's language (as stored when it is not known)."""
    data = data or {}
    message_id = data.get(MESSAGE_ID)
    if isinstance(message_id, str):
        params = data.get(MESSAGE_PARAMS)
        translated = _(message_id)
        if "%(" not in message_id:
            return translated
        try:
            return translated % (params if isinstance(params, dict) else {})
        except (KeyError, TypeError, ValueError):  # values that do not fill the message
            return message
    chosen = data.get("auto")
    if message.startswith("Chosen automatically: ") and isinstance(chosen, dict):
        return _(CHOSEN, settings=chosen_settings(chosen))
    for pattern, found_id in _PATTERNS:
        found = pattern.match(message)
        if found is None:
            continue
        values = found.groupdict()
        for name in ("error", "note"):
            if name in values:
                values[name] = translate_message(values[name])
        if "status" in values:
            values["status"] = status_text(values["status"])
        return _(found_id, **values) if values else _(found_id)
    return translate_message(message)
