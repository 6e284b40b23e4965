"""The training engine: a validated config and chat records in; a LoRA adapter folder and a
stream of events and step metrics out. No web stack, database or queue here: the same call
runs under a Celery task, the CLI and a bare GPU machine.

This module loads the model and tokenizer, prepares the records and saves the result;
``trainer`` adds the adapter and optimiser to the loaded model, and ``loop`` runs the steps.
"""

from __future__ import annotations

import errno
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from worker.spec import autoconfig, method_support
from worker.spec.config import TrainConfig
from worker.spec.errors import TrainingCancelled, TrainingError
from worker.spec.methods import METHODS
from worker.training import data, models
from worker.training.callbacks import Silent, StepMetrics, TrainCallbacks
from worker.training.ranks import Ranks, full_state_dict
from worker.training.trainer import TrainedModel, train_model

# Imported from here by tests that drive one step through the engine's own code.
from worker.training.trainer import _forward_module as _forward_module

__all__ = [
    "StepMetrics",
    "TrainCallbacks",
    "TrainResult",
    "TrainedModel",
    "TrainingCancelled",
    "TrainingError",
    "train",
    "train_model",
]


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    adapter_dir: Path
    train_seconds: float
    tokens: int
    files: list[Path]
    best_step: int | None = None  # the step of the lowest validation loss
    best_val_loss: float | None = None
    stopped_early: bool = False


def train(
    config: TrainConfig,
    *,
    records: Sequence[dict[str, Any]],
    output_dir: Path,
    model_cache_dir: Path,
    callbacks: TrainCallbacks | None = None,
    allow_downloads: bool = False,
    validation_records: Sequence[dict[str, Any]] | None = None,
    checkpoint_dir: Path | None = None,
    resume_from: Path | None = None,
) -> TrainResult:
    """Fine-tune ``config.base_model`` on ``records`` and save the adapter to ``output_dir``.

    ``output_dir`` appears only when the run succeeds: the adapter is written to a staging
    folder beside it and renamed into place, so a failed or cancelled run leaves nothing
    half-written for a later step to pick up. Failures raise TrainingError with a message
    meant for the person who started the run; cancellation raises TrainingCancelled.

    ``validation_records`` give the validation loss (and early stopping, when the config
    asks for it). With ``checkpoint_dir``, resumable checkpoints are saved there (see
    ``checkpoints``); ``resume_from`` names one to carry on from, which the run then repeats
    step for step as if it had never stopped.
    """
    callbacks = callbacks or Silent()
    output_dir = Path(output_dir)
    # In a multi-process run (see ``distributed``) rank 0 alone writes the result.
    main = Ranks.current().main
    if main and output_dir.exists() and not (output_dir.is_dir() and not any(output_dir.iterdir())):
        raise TrainingError(f"The output folder {output_dir} already exists and is not empty.")
    staging: Path | None = None
    try:
        if main:
            output_dir.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
            staging.chmod(0o755)  # mkdtemp's 0700 would hide the adapter from other services
        options = _RunOptions(
            validation_records=validation_records or (),
            checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir is not None else None,
            resume_from=Path(resume_from) if resume_from is not None else None,
        )
        trained = _run(
            config, records, staging, Path(model_cache_dir), callbacks, allow_downloads, options
        )
        if staging is not None:
            staging.rename(output_dir)
            staging = None
        done: dict[str, Any] = {"steps": trained.steps, "final_loss": trained.final_loss}
        if trained.best_step is not None:
            done.update(best_step=trained.best_step, best_val_loss=trained.best_val_loss)
        callbacks.on_event("info", "Done", done)
    except (TrainingError, TrainingCancelled):
        raise
    except Exception as exc:
        raise TrainingError(_explain(exc)) from exc
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    files = sorted(p for p in output_dir.rglob("*") if p.is_file()) if main else []
    return TrainResult(
        trained.steps,
        trained.final_loss,
        output_dir,
        trained.seconds,
        trained.tokens,
        files,
        best_step=trained.best_step,
        best_val_loss=trained.best_val_loss,
        stopped_early=trained.stopped_early,
    )


@dataclass(frozen=True)
class _RunOptions:
    validation_records: Sequence[dict[str, Any]]
    checkpoint_dir: Path | None
    resume_from: Path | None


def _run(
    config: TrainConfig,
    records: Sequence[dict[str, Any]],
    staging: Path | None,
    model_cache_dir: Path,
    callbacks: TrainCallbacks,
    allow_downloads: bool,
    options: _RunOptions,
) -> TrainedModel:
    def stop_if_asked() -> None:
        if callbacks.should_stop():
            raise TrainingCancelled("Training was cancelled")

    def info(message: str) -> None:
        callbacks.on_event("info", message)

    info(f"Loading model '{config.base_model}' …")
    # trust_remote_code / allow_pickle_weights come from an admin's allow-list (the server
    # fills them in); every step that reads the model folder gets the same answer.
    resolved = models.resolve_model(
        config.base_model,
        model_cache_dir,
        allow_downloads,
        notify=info,
        trust_remote_code=config.trust_remote_code,
        allow_pickle_weights=config.allow_pickle_weights,
    )
    method = METHODS[config.method]
    # The same check the web process made before queueing, against the folder actually
    # resolved here and this worker's hardware.
    refusal = method.unsupported(
        method_support.model_type_of(resolved.path), cuda_available=torch.cuda.is_available()
    )
    if refusal:
        raise TrainingError(refusal)
    stop_if_asked()
    tokenizer = models.load_tokenizer(resolved, trust_remote_code=config.trust_remote_code)
    if data.ensure_chat_template(tokenizer):
        callbacks.on_event(
            "warning",
            "The model has no chat template; using a ChatML-style one (saved with the adapter).",
        )
    had_pad = tokenizer.pad_token_id is not None
    pad_id = data.ensure_pad_token(tokenizer)
    if not had_pad:
        info("The tokenizer has no padding token; padding with its end-of-sequence token.")

    # Fields left at "auto" are chosen from this model and these records (see autoconfig).
    config = autoconfig.resolve_for_run(
        config,
        records=records,
        tokenizer=tokenizer,
        model_dir=resolved.path,
        notify=lambda message, chosen: callbacks.on_event("info", message, chosen),
        cpu=not torch.cuda.is_available(),
    )
    samples = _prepare(config, records, tokenizer, callbacks)
    validation = _prepare_validation(config, options.validation_records, tokenizer, callbacks)
    stop_if_asked()

    device = models.pick_device_and_dtype(config.dtype)[0]
    # Full fine-tuning over several GPUs is sharded: the model is read into host memory and
    # each GPU receives its share a layer at a time (ranks.bring_to_device), so a model whose
    # float32 weights do not fit one GPU can still be trained.
    ranks = Ranks.current()
    staged = ranks.several and method.trains_all_weights and device.type == "cuda"
    if staged:
        info(
            f"Loading the model into host memory; each of the {ranks.world} GPUs keeps its "
            "share of the weights"
        )
    model = models.load_model(
        resolved,
        dtype=models.training_dtype(config, device),
        device=torch.device("cpu") if staged else device,
        trust_remote_code=config.trust_remote_code,
        allow_pickle_weights=config.allow_pickle_weights,
        quantization=method.quantization,
    )
    stop_if_asked()
    trained = train_model(
        model,
        samples,
        config,
        pad_id=pad_id,
        callbacks=callbacks,
        validation_samples=validation,
        checkpoint_dir=options.checkpoint_dir,
        resume_from=options.resume_from,
        device=device,
    )
    # Sharded weights (full fine-tuning on several GPUs) gathered whole: every process.
    whole = full_state_dict(trained.model) if Ranks.current().several else None
    stop_if_asked()
    if staging is None:  # a process of a multi-process run other than rank 0
        return trained

    info("Saving model" if method.trains_all_weights else "Saving adapter")
    saving: dict[str, Any] = {"state_dict": whole} if whole is not None else {}
    trained.model.save_pretrained(str(staging), safe_serialization=True, **saving)
    tokenizer.save_pretrained(str(staging))
    return trained


def _prepare(
    config: TrainConfig,
    records: Sequence[dict[str, Any]],
    tokenizer: Any,
    callbacks: TrainCallbacks,
) -> list[data.Sample]:
    if not records:
        raise TrainingError("There are no training samples.")
    prepared = data.prepare_samples(
        tokenizer,
        records,
        max_seq_length=autoconfig.settled(config).max_seq_length,
        system_prompt=config.system_prompt,
    )
    kept, dropped = len(prepared.samples), prepared.dropped_too_long
    if dropped:
        callbacks.on_event(
            "warning",
            f"{dropped} of {len(records)} samples were dropped: no part of their answer fits "
            f"in max_seq_length={config.max_seq_length} tokens. Raise max_seq_length or "
            "shorten these samples.",
            {"dropped": dropped},
        )
    if not kept:
        raise TrainingError(
            f"No sample fits in max_seq_length={config.max_seq_length} tokens with any of its "
            "answer left; raise max_seq_length."
        )
    callbacks.on_event(
        "info",
        f"Prepared {kept} samples ({dropped} dropped: too long)",
        {"samples": kept, "dropped": dropped},
    )
    return prepared.samples


def _prepare_validation(
    config: TrainConfig,
    records: Sequence[dict[str, Any]],
    tokenizer: Any,
    callbacks: TrainCallbacks,
) -> list[data.Sample]:
    if not records:
        if config.early_stopping_patience is not None:
            callbacks.on_event(
                "warning",
                "Early stopping is off: there is no validation data to watch. Give the "
                "dataset a validation split to use it.",
            )
        return []
    prepared = data.prepare_samples(
        tokenizer,
        records,
        max_seq_length=autoconfig.settled(config).max_seq_length,
        system_prompt=config.system_prompt,
    )
    kept, dropped = len(prepared.samples), prepared.dropped_too_long
    if dropped:
        callbacks.on_event(
            "warning",
            f"{dropped} of {len(records)} validation samples are left out of the validation "
            f"loss: no part of their answer fits in max_seq_length={config.max_seq_length}.",
            {"validation_dropped": dropped},
        )
    if kept:
        callbacks.on_event("info", f"Validation loss on {kept} samples", {"validation": kept})
    return prepared.samples


def _explain(exc: Exception) -> str:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return (
            "The GPU ran out of memory. Lower the batch size or max_seq_length (raise "
            "gradient_accumulation_steps to keep the same effective batch size)."
        )
    if isinstance(exc, MemoryError):
        return "The machine ran out of memory. Lower the batch size or max_seq_length."
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return f"The disk is full: {exc}"
    return f"Training failed unexpectedly ({type(exc).__name__}: {exc})."
