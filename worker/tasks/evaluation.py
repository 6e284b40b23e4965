"""Celery task that runs one evaluation: claim the row, run the models, store every answer."""

from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

from app.core.config import Settings, get_settings
from app.core.db import session_scope
from app.models import DatasetVersion, EvalStatus, Evaluation, Job
from app.services import datasets as datasets_service
from app.services import evaluations as service
from app.services import jobs as jobs_service
from app.services import leases
from app.services.jobs.base_models import check_on_worker
from worker.celery_app import EVALUATE_MODELS, celery_app
from worker.evaluation.run import (
    Candidate,
    EvalOutcome,
    Example,
    auto_max_new_tokens,
    evaluate,
    examples_from_records,
    tokenizer_for,
)
from worker.spec.decoding import DecodingSettings
from worker.spec.methods import METHODS
from worker.spec.model_names import for_remote_user
from worker.tasks import crashed
from worker.tasks.runtime import Lease
from worker.training import TrainingCancelled, TrainingError

log = logging.getLogger(__name__)


class EvalReporter:
    """Progress and cancellation for a running evaluation; the lease's heartbeat stores the
    progress with each beat."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.progress: dict[str, Any] = {"phase": "loading"}
        self._stage: tuple[str, str] = ("loading", "")
        self._stage_started = time.monotonic()
        self.events: list[dict[str, str]] = []
        lease.progress = lambda: {"progress": {**self.progress, "events": self.events[-5:]}}

    def on_progress(self, phase: str, key: str, done: int, total: int) -> None:
        now = time.monotonic()
        if (phase, key) != self._stage or done == 0:
            self._stage, self._stage_started = (phase, key), now
        progress: dict[str, Any] = {"phase": phase, "model": key, "done": done, "total": total}
        elapsed = now - self._stage_started
        if 0 < done < total and elapsed > 0:
            # This stage's remaining items at its mean pace so far (a model's answers are
            # generated in batches of similar prompts, so the pace holds within a stage).
            progress["eta_seconds"] = round(elapsed / done * (total - done), 1)
        self.progress = progress

    def on_event(self, level: str, message: str) -> None:
        self.events.append({"level": level, "message": message})

    def should_stop(self) -> bool:
        return self.lease.should_stop()


def _read_split(settings: Settings, version: DatasetVersion, split: str) -> list[dict[str, Any]]:
    files = datasets_service.split_files(settings, version)
    names = list(files) if split == "all" else [split]
    records: list[dict[str, Any]] = []
    for name in names:
        path = files.get(name)
        if path is not None and path.is_file():
            with path.open(encoding="utf-8") as fh:
                records.extend(json.loads(line) for line in fh if line.strip())
    return records


def _candidates(session: Any, settings: Settings, evaluation: Evaluation) -> list[Candidate]:
    """The evaluation's models, with the folders their trained weights are in."""
    return candidates_from(session, settings, evaluation.candidates)


def candidates_from(
    session: Any, settings: Settings, described: list[dict[str, Any]]
) -> list[Candidate]:
    """Candidates as stored on an evaluation, turned into what the evaluation library runs."""
    candidates = []
    for c in described:
        # One made before base models were checked at creation could name any path.
        check_on_worker(str(c["base_model"]), settings)
        weights_dir: Path | None = None
        train_config: dict[str, Any] | None = None
        method = c.get("method")
        if c["kind"] == "job":
            artifact = jobs_service.model_artifact(session, job_id=uuid.UUID(c["job_id"]))
            if artifact is None:
                raise TrainingError(f"{c['label']}: the job's model files are gone.")
            weights_dir = settings.data_dir / artifact.path
        elif c["kind"] == "checkpoint":
            job = session.get(Job, uuid.UUID(c["job_id"]))
            weights_dir = service.checkpoint_folder(
                settings, uuid.UUID(c["job_id"]), c["checkpoint"]
            )
            state = weights_dir / "state.json"
            if job is None or not state.is_file():
                raise TrainingError(f"{c['label']}: the checkpoint is gone.")
            train_config = json.loads(state.read_text(encoding="utf-8"))["config"]
        info = METHODS.get(method) if method else None
        candidates.append(
            Candidate(
                key=c["key"],
                label=c["label"],
                base_model=c["base_model"],
                kind=c["kind"],
                weights_dir=weights_dir,
                full_model=bool(info and info.trains_all_weights) and c["kind"] == "job",
                quantization=info.quantization if info else None,
                system_prompt=c.get("system_prompt") or None,
                k_shot=int(c.get("k_shot") or 0),
                trust_remote_code=bool(c.get("trust_remote_code")),
                allow_pickle_weights=bool(c.get("allow_pickle_weights")),
                train_config=train_config,
            )
        )
    return candidates


@celery_app.task(name=EVALUATE_MODELS)
def evaluate_models(evaluation_id: str) -> str:
    """Run one evaluation. Idempotent: one that is not queued is left alone."""
    settings = get_settings()
    lease = Lease(leases.EVALUATION, uuid.UUID(evaluation_id))
    with session_scope() as session:
        evaluation = lease.claim(session)
        if evaluation is None:
            return "skipped"
        version = session.get(DatasetVersion, evaluation.dataset_version_id)
        assert version is not None
        records = _read_split(settings, version, evaluation.split)
        pool = _read_split(settings, version, "train") if evaluation.split != "train" else []
        options = dict(evaluation.settings)
        baseline = options.get("baseline")
        failure: str | None = None
        try:
            candidates = _candidates(session, settings, evaluation)
        except TrainingError as exc:
            candidates, failure = [], str(exc)
    if failure is not None:
        lease.finish(EvalStatus.failed, error=failure)
        return "failed"

    reporter = EvalReporter(lease)
    status, error, outcome, decoding = EvalStatus.failed, None, None, None
    with lease:
        try:
            examples = examples_from_records(records)
            if options.get("max_samples"):
                examples = examples[: int(options["max_samples"])]
            decoding = _decoding(options.get("decoding") or {}, candidates, examples, settings)
            outcome = evaluate(
                candidates,
                examples,
                decoding,
                model_cache_dir=settings.model_cache_dir,
                allow_downloads=settings.allow_hub_downloads,
                baseline=baseline,
                few_shot_pool=examples_from_records(pool),
                callbacks=reporter,
                backend=settings.eval_backend,
            )
            status = EvalStatus.succeeded
        except TrainingCancelled:
            status = EvalStatus.cancelled
        except TrainingError as exc:
            error = for_remote_user(exc)
        except Exception as exc:
            error = crashed(f"evaluation {evaluation_id}", exc)

    if (stopped := lease.give_up_or_hand_back()) is not None:
        return stopped
    results: dict[str, Any] | None = None
    samples: list[dict[str, Any]] = []
    if outcome is not None and decoding is not None:
        subject = _subject(candidates, baseline)
        primary = str(options.get("primary_metric") or service.DEFAULT_PRIMARY)
        results = outcome.summary(baseline=baseline, subject=subject, primary_metric=primary)
        results["labels"] = {c.key: c.label for c in candidates}
        results["decoding"] = decoding.model_dump(mode="json")
        samples = _sample_rows(outcome, baseline=baseline, subject=subject, primary=primary)
    values: dict[str, Any] = {"results": results} if results is not None else {}
    if status == EvalStatus.succeeded:
        values["progress"] = {"phase": "done"}
    lease.finish(
        status,
        error=error,
        values=values,
        then=lambda session: (
            service.store_samples(session, evaluation_id=lease.item_id, samples=samples)
            if samples
            else None
        ),
    )
    return str(status)


def _decoding(
    given: dict[str, Any], candidates: list[Candidate], examples: list[Example], settings: Settings
) -> DecodingSettings:
    values = {k: v for k, v in given.items() if v is not None}
    if "max_new_tokens" not in values and examples:
        # Chosen once, with the subject's tokenizer, and recorded: every model gets the same.
        tokenizer = tokenizer_for(candidates[-1], settings.model_cache_dir, False)
        values["max_new_tokens"] = auto_max_new_tokens(tokenizer, [e.reference for e in examples])
    if "stop" in values:
        values["stop"] = tuple(values["stop"])
    return DecodingSettings.model_validate(values)


def _subject(candidates: list[Candidate], baseline: str | None) -> str | None:
    others = [c.key for c in candidates if c.key != baseline]
    trained = [c.key for c in candidates if c.weights_dir is not None]
    return (trained or others or [baseline or ""])[0] or None


def _sample_rows(
    outcome: EvalOutcome, *, baseline: str | None, subject: str | None, primary: str
) -> list[dict[str, Any]]:
    rows = []
    for index, example in enumerate(outcome.examples):
        outputs = {key: run.answers[index].text for key, run in outcome.runs.items()}
        scores = outcome.per_example_scores(index)
        delta = None
        if baseline is not None and subject is not None and subject != baseline:
            a, b = scores[subject].get(primary), scores[baseline].get(primary)
            if a is not None and b is not None:
                delta = (b - a) if primary == "perplexity" else (a - b)
        rows.append(
            {
                "position": index,
                "messages": example.messages,
                "prompt": example.prompt,
                "reference": example.reference,
                "outputs": outputs,
                "scores": scores,
                "delta": delta,
                "search_text": service.search_text(example.prompt, example.reference, outputs),
            }
        )
    return rows
