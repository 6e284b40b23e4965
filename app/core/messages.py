"""Error messages in the reader's language and in plain words: the one place that turns the
messages of services and of pydantic into what a page or an API error body shows.

- A field path (``config.max_seq_length``, ``success_criteria.0``) becomes its label
  ("Max sequence length", “最大序列长度”); the API keeps the path as ``field``.
- pydantic's messages ("Input should be greater than 0", "Value error, …") become sentences,
  translated; "Value error, " is dropped in every language.
- A service's message is looked up in the catalog as it is; the common ones with values in
  them are matched by pattern below. What is neither stays as it was (English).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from app.core.errors import FieldError
from app.core.i18n import N_, _, current_locale
from app.core.value_messages import NESTED
from app.core.value_messages import PATTERNS as VALUE_PATTERNS

# The labels of the fields that forms and request bodies name (the last part of a path).
FIELD_LABELS: dict[str, str] = {
    "name": N_("Name"),
    "email": N_("E-mail"),
    "password": N_("Password"),
    "display_name": N_("Display name"),
    "role": N_("Role"),
    "locale": N_("Language"),
    "task_description": N_("Task description"),
    "domain": N_("Domain"),
    "system_prompt": N_("System prompt"),
    "success_criteria": N_("Success criteria"),
    "examples": N_("Examples"),
    "config": N_("Training settings"),
    "base_model": N_("Base model"),
    "method": N_("Method"),
    "preset": N_("Preset"),
    "max_steps": N_("Max steps"),
    "epochs": N_("Epochs"),
    "learning_rate": N_("Learning rate"),
    "batch_size": N_("Batch size"),
    "gradient_accumulation_steps": N_("Gradient accumulation steps"),
    "max_seq_length": N_("Max sequence length"),
    "packing": N_("Packing"),
    "micro_batch_tokens": N_("Tokens per micro-batch"),
    "warmup_steps": N_("Warm-up steps"),
    "lr_scheduler": N_("Learning-rate schedule"),
    "weight_decay": N_("Weight decay"),
    "max_grad_norm": N_("Gradient clipping"),
    "lora_r": N_("LoRA rank (r)"),
    "lora_alpha": N_("LoRA alpha"),
    "lora_dropout": N_("LoRA dropout"),
    "target_modules": N_("Target modules"),
    "use_rslora": N_("rsLoRA"),
    "use_dora": N_("DoRA"),
    "num_virtual_tokens": N_("Virtual tokens"),
    "seed": N_("Random seed"),
    "checkpoint_every": N_("Checkpoint every"),
    "keep_checkpoints": N_("Checkpoints kept"),
    "eval_every": N_("Validate every"),
    "early_stopping_patience": N_("Early-stopping patience"),
    "early_stopping_min_delta": N_("Early-stopping minimum gain"),
    "dtype": N_("Precision"),
    "gpus": N_("GPUs"),
    "dataset_id": N_("Dataset"),
    "project_id": N_("Project"),
    "job_id": N_("Training job"),
    "models": N_("Models"),
    "split": N_("Split"),
    "file": N_("File"),
    "format": N_("Format"),
    "expires_days": N_("Expires after (days)"),
    "scopes": N_("Scopes"),
    "validation_fraction": N_("Validation share"),
    "test_fraction": N_("Test share"),
    "max_new_tokens": N_("Max new tokens"),
    "temperature": N_("Temperature"),
}


# The statuses pages show (jobs, evaluations, exports, deployments, uploads, review campaigns and
# items, verdicts): the status itself is the message id, so English shows it as it is.
STATUS_WORDS = [
    N_("validating_files"),
    N_("queued"),
    N_("pending"),
    N_("starting"),
    N_("running"),
    N_("loading"),
    N_("ready"),
    N_("stopping"),
    N_("stopped"),
    N_("succeeded"),
    N_("failed"),
    N_("cancelled"),
    N_("staged"),
    N_("validating"),
    N_("imported"),
    N_("invalid"),
    N_("draft"),
    N_("open"),
    N_("closed"),
    N_("answering"),
    N_("met"),
    N_("not_met"),
    N_("not_measured"),
    # An evaluation's phases, a dataset version's origin.
    N_("generating"),
    N_("scoring"),
    N_("likelihood"),
    N_("done"),
    # What a worker does while it builds an export or loads a deployed model.
    N_("checkpoint"),
    N_("packing"),
    N_("merging"),
    N_("starting server"),
    N_("clean"),
    N_("split"),
    N_("upload"),
]


def status_text(status: object) -> str:
    """A status in the reader's language ("running" → “运行中”)."""
    text = str(status)
    return _(text) if text in STATUS_WORDS else text


def field_label(field: str | None) -> str:
    """The words for a field path: its last named part's label, else the path itself."""
    if not field:
        return ""
    parts = [p for p in field.split(".") if not p.isdigit() and p not in ("body", "query")]
    for part in reversed(parts):
        if part in FIELD_LABELS:
            return _(FIELD_LABELS[part])
    return field


# pydantic's messages (pydantic-core's wording) and the common ones of tunelab's services with
# values in them: (pattern, message id). The groups fill the message's placeholders.
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(p), m)
    for p, m in [
        (r"^Field required$", N_("This field is required.")),
        (r"^Extra inputs are not permitted$", N_("This field is not expected here.")),
        (r"^Input should be greater than (?P<n>\S+)$", N_("Enter a number greater than %(n)s.")),
        (
            r"^Input should be greater than or equal to (?P<n>\S+)$",
            N_("Enter a number of at least %(n)s."),
        ),
        (r"^Input should be less than (?P<n>\S+)$", N_("Enter a number less than %(n)s.")),
        (
            r"^Input should be less than or equal to (?P<n>\S+)$",
            N_("Enter a number of at most %(n)s."),
        ),
        (r"^Input should be a valid integer.*$", N_("Enter a whole number.")),
        (r"^Input should be a valid number.*$", N_("Enter a number.")),
        (r"^Input should be a valid boolean.*$", N_("Choose yes or no.")),
        (r"^Input should be a valid UUID.*$", N_("Choose one from the list.")),
        (r"^Input should be a valid string.*$", N_("Enter text.")),
        (r"^Input should be a valid list.*$", N_("Enter a list.")),
        (r"^Input should be (?P<choices>'.+)$", N_("Choose one of: %(choices)s.")),
        (
            r"^String should have at least (?P<n>\d+) characters?$",
            N_("Enter at least %(n)s characters."),
        ),
        (
            r"^String should have at most (?P<n>\d+) characters?$",
            N_("Enter at most %(n)s characters."),
        ),
        (
            r"^List should have at most (?P<n>\d+) items? after validation, not \d+$",
            N_("Enter at most %(n)s items."),
        ),
        (r"^value is not a valid email address.*$", N_("Enter a valid e-mail address.")),
        (
            r"^the training config is not valid: .*$",
            N_("The training settings are not valid; see the fields below."),
        ),
        (r"^the request is not valid: .*$", N_("The request is not valid; see the fields below.")),
        # Success criteria (worker/spec/criteria.py), the first thing a new user writes.
        (
            r'^could not read "(?P<text>.*)": write it like "(?P<a>[^"]+)" or "(?P<b>[^"]+)"; '
            r"metrics: (?P<metrics>.+)$",
            N_('could not read "%(text)s": write it like "%(a)s" or "%(b)s"; metrics: %(metrics)s'),
        ),
        (
            r'^could not read "(?P<text>.*)": write one criterion per line$',
            N_('could not read "%(text)s": write one criterion per line'),
        ),
        (
            r'^unknown metric "(?P<name>.*)" in "(?P<text>.*)": use one of (?P<metrics>.+?)'
            r" \(did you mean (?P<hint>\S+)\?\)$",
            N_(
                'unknown metric "%(name)s" in "%(text)s": use one of %(metrics)s (did you mean %(hint)s?)'
            ),
        ),
        (
            r'^unknown metric "(?P<name>.*)" in "(?P<text>.*)": use one of (?P<metrics>.+)$',
            N_('unknown metric "%(name)s" in "%(text)s": use one of %(metrics)s'),
        ),
        (
            r'^could not read the amount "(?P<amount>.*)" in "(?P<text>.*)": write it like '
            r'"(?P<example>.+)"$',
            N_('could not read the amount "%(amount)s" in "%(text)s": write it like "%(example)s"'),
        ),
        (
            r'^the criterion is empty: write it like "(?P<a>[^"]+)" or "(?P<b>[^"]+)"$',
            N_('the criterion is empty: write it like "%(a)s" or "%(b)s"'),
        ),
        (
            r"^success criterion (?P<n>\d+): (?P<rest>.+)$",
            N_("success criterion %(n)s: %(rest)s"),
        ),
        # Uploads and splits.
        (
            r"^(?P<file>.+) cannot be read: (?P<problem>.+)$",
            N_("%(file)s cannot be read: %(problem)s"),
        ),
        (
            r"^a split of (?P<validation>\S+) validation and (?P<test>\S+) test leaves no "
            r"record of (?P<records>\d+) to train on: use smaller fractions$",
            N_(
                "a split of %(validation)s validation and %(test)s test leaves no record of "
                "%(records)s to train on: use smaller fractions"
            ),
        ),
        (r"^use a fraction from 0 to 1$", N_("use a fraction from 0 to 1")),
        (r"^leaves no training records$", N_("leaves no training records")),
        (
            r"^the file is larger than the upload limit of (?P<limit>.+)$",
            N_("the file is larger than the upload limit of %(limit)s"),
        ),
        (
            r"^no file was sent: attach it in a form field named `(?P<name>\w+)`$",
            N_("no file was sent: attach it in a form field named `%(name)s`"),
        ),
        # Accounts, evaluations, jobs.
        (
            r"^the password must have at least (?P<n>\d+) characters$",
            N_("the password must have at least %(n)s characters"),
        ),
        (
            r"^a user with the e-mail (?P<email>\S+) already exists$",
            N_("a user with the e-mail %(email)s already exists"),
        ),
        (r"^no user with the e-mail (?P<email>\S+)$", N_("no user with the e-mail %(email)s")),
        (
            r"^say which data to evaluate on: dataset_id \(and dataset_version\)$",
            N_("choose the data to evaluate on"),
        ),
        (
            r"^the job has already (?P<status>\w+) and cannot be cancelled$",
            N_("the job has already %(status)s and cannot be cancelled"),
        ),
        (
            r"^the training config does not fit this model or dataset: (?P<why>.+)$",
            N_("the training settings do not fit this model or dataset: %(why)s"),
        ),
        (
            r"^this job needs about (?P<need>\d+) GB per GPU, more than a worker here can have "
            r"\(at most (?P<most>[\d.]+) GB\)$",
            N_(
                "this job needs about %(need)s GB per GPU, more than a worker here can have "
                "(at most %(most)s GB)"
            ),
        ),
        (
            r"^this job asks for (?P<need>\d+) GPUs, more than a worker here can have "
            r"\(at most (?P<most>\d+)\)$",
            N_(
                "this job asks for %(need)s GPUs, more than a worker here can have (at most %(most)s)"
            ),
        ),
        (r"^(?P<field>[\w.]+): (?P<rest>.+)$", "%(field)s: %(rest)s"),
    ]
]

# The catch-all "field: message" comes last, after the messages of app/core/value_messages.
_ALL_PATTERNS = [*_PATTERNS[:-1], *VALUE_PATTERNS, _PATTERNS[-1]]

# Messages of the web server itself, marked here so the catalog has them (app/main.py).
N_("the database is busy or restarting; try again in a few seconds")
N_("something went wrong on the server; the error was logged")
N_("log in or send an API token (Authorization: Bearer …)")
N_("the API token is not valid (unknown, revoked or expired)")
N_("not found")
# Roles, as the header and the users page show them.
N_("admin")
N_("trainer")
N_("reviewer")


def translate_message(message: str) -> str:
    """One message in the reader's language and in plain words ("Value error, " dropped)."""
    text = message.removeprefix("Value error, ").strip()
    if not text or current_locale() == "en":
        return text
    translated = _(text)
    if translated != text:
        return translated
    for pattern, message_id in _ALL_PATTERNS:
        found = pattern.match(text)
        if found is None:
            continue
        values: dict[str, Any] = found.groupdict()
        for name in ("a", "b", "example"):
            if name in values:
                values[name] = _criterion_example(values[name])
        if "rest" in values and message_id != "%(field)s: %(rest)s":
            values["rest"] = translate_message(values["rest"])
        if message_id == "%(field)s: %(rest)s":
            return labelled(values["field"], translate_message(values["rest"]))
        for name in NESTED.intersection(values):
            values[name] = translate_message(values[name])
        if "setting" in values:
            values["setting"] = field_label(values["setting"])
        if "choices" in values:
            values["choices"] = _choices(values["choices"])
        if "status" in values:
            values["status"] = status_text(values["status"])
        return _(message_id, **values)
    return text


def _choices(text: str) -> str:
    """ "'a', 'b' or 'c'" (pydantic's, worker/spec's) as the reader lists things."""
    head, sep, last = text.rpartition(" or ")
    return _(", ").join([*head.split(", "), last]) if sep else text


# The examples a success criterion's error proposes (worker/spec/criteria.py), written the way
# the reader's language reads them; the criteria parser reads both.
_IMPROVEMENT_EXAMPLE = re.compile(r"^(?P<metric>\S+) improves on baseline by >= (?P<n>\S+)$")


def _criterion_example(example: str) -> str:
    found = _IMPROVEMENT_EXAMPLE.match(example)
    if found is None:
        return example
    return _("%(metric)s improves on baseline by >= %(n)s", **found.groupdict())


def labelled(field: str | None, message: str) -> str:
    """ "Learning rate: Enter a number greater than 0." (“学习率：请输入大于 0 的数。”)"""
    label = field_label(field)
    return _("%(field)s: %(message)s", field=label, message=message) if label else message


def translate_errors(errors: Iterable[FieldError]) -> list[FieldError]:
    return [
        FieldError(message=translate_message(e.message), field=e.field, line=e.line) for e in errors
    ]


def translated_body(body: dict[str, Any]) -> dict[str, Any]:
    """An API error body with a ``message`` in the reader's language beside the ``detail``
    (kept as it was), and each error's ``message`` translated, its ``field`` kept."""
    errors = body.get("errors") or []
    translated = [{**e, "message": translate_message(str(e.get("message", "")))} for e in errors]
    out = dict(body)
    detail = str(body.get("detail", ""))
    if errors:
        out["errors"] = translated
    if translated and detail.startswith(_SUMMARIES):
        # "the request is not valid: a: …; b: …": the first problem, in words, says more.
        first = translated[0]
        out["message"] = labelled(first.get("field"), first["message"])
    else:
        out["message"] = translate_message(detail)
    return out


# Details that only list their errors' fields and messages.
_SUMMARIES = ("the request is not valid: ", "the training config is not valid: ")
