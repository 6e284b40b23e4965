"""The training engine: a validated config and chat records in; a LoRA adapter folder and a
stream of events and step metrics out. No web stack, database or queue here: the same call
runs under a Celery task, the CLI and a bare GPU machine."""

from __future__ import annotations

import contextlib
import errno
import math
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from worker.training import (
    attention,
    autoconfig,
    checkpoints,
    data,
    fused,
    method_support,
    models,
    packing,
)
from worker.training.config import TrainConfig
from worker.training.errors import TrainingCancelled, TrainingError
from worker.training.methods import METHODS, build_peft_config
from worker.training.steps import (
    StepPlan,
    micro_batches,
    optimiser_step,
    plan_steps,
    validation_loss,
)

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
class StepMetrics:
    step: int
    total_steps: int
    epoch: float
    loss: float
    learning_rate: float
    grad_norm: float  # total norm before clipping
    tokens_per_second: float
    tokens: int  # non-pad tokens processed in this optimiser step
    eta_seconds: float = 0.0  # the remaining steps at this process's mean time per step
    gpu_memory_bytes: int | None = None  # peak allocated on the GPU so far; None on the CPU
    val_loss: float | None = None  # set on the steps the validation loss was computed at


class TrainCallbacks(Protocol):
    def on_event(self, level: str, message: str, data: dict[str, Any] | None = None) -> None:
        """level is "info", "warning" or "error"; message is for people."""

    def on_step(self, metrics: StepMetrics) -> None: ...

    def should_stop(self) -> bool:
        """Polled before every optimiser step and between phases."""
        ...


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


class _Silent:
    def on_event(self, level: str, message: str, data: dict[str, Any] | None = None) -> None:
        pass

    def on_step(self, metrics: StepMetrics) -> None:
        pass

    def should_stop(self) -> bool:
        return False


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
    callbacks = callbacks or _Silent()
    output_dir = Path(output_dir)
    if output_dir.exists() and not (output_dir.is_dir() and not any(output_dir.iterdir())):
        raise TrainingError(f"The output folder {output_dir} already exists and is not empty.")
    staging: Path | None = None
    try:
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
    files = sorted(p for p in output_dir.rglob("*") if p.is_file())
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
    staging: Path,
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
    )
    samples = _prepare(config, records, tokenizer, callbacks)
    validation = _prepare_validation(config, options.validation_records, tokenizer, callbacks)
    stop_if_asked()

    device, dtype = models.pick_device_and_dtype(config.dtype)
    model = models.load_model(
        resolved,
        # Full fine-tuning keeps float32 master weights and computes in ``dtype`` under
        # autocast (see steps.plan_steps): bfloat16 weights would round small updates away.
        dtype=torch.float32 if method.trains_all_weights else dtype,
        device=device,
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
    )
    stop_if_asked()

    info("Saving model" if method.trains_all_weights else "Saving adapter")
    trained.model.save_pretrained(str(staging), safe_serialization=True)
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


@dataclass
class TrainedModel:
    """What ``train_model`` returns: the adapted model and how training went."""

    model: Any  # the PEFT-wrapped model, ready for save_pretrained
    steps: int
    final_loss: float
    seconds: float
    tokens: int
    best_step: int | None = None
    best_val_loss: float | None = None
    stopped_early: bool = False


def train_model(
    model: Any,
    samples: Sequence[data.Sample],
    config: TrainConfig,
    *,
    pad_id: int,
    callbacks: TrainCallbacks | None = None,
    validation_samples: Sequence[data.Sample] = (),
    checkpoint_dir: Path | None = None,
    resume_from: Path | None = None,
) -> TrainedModel:
    """Add the config's adapter to a loaded causal LM and train it on encoded ``samples``.

    The part of ``train`` after loading, public so a benchmark can run the very same loop on
    a model it built itself. The model's own modules are patched (fused layers, packed
    attention) only while training runs and restored before this returns.
    """
    callbacks = callbacks or _Silent()
    config = autoconfig.resolve_for_model(config, model=model, samples=samples)
    device = next(model.parameters()).device
    # Seeded right before the adapter is created so its initial weights, and the dropout
    # masks after them, depend on the seed alone and not on what loading consumed.
    _seed_everything(config.seed)
    from peft import get_peft_model

    peft_config = build_peft_config(config, model)
    if peft_config is None:
        model.requires_grad_(True)
        _check_full_fine_tuning_fits(model, device)
    else:
        model = get_peft_model(model, peft_config)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    dtype = next(
        (p.dtype for p in model.parameters() if not p.requires_grad),
        next(model.parameters()).dtype,
    )
    callbacks.on_event(
        "info",
        f"Model loaded ({_human(total)} parameters, {_human(trainable)} trainable)",
        {
            "parameters": total,
            "trainable": trainable,
            "device": str(device),
            "dtype": str(dtype).removeprefix("torch."),
            "method": config.method,
            "quantization": METHODS[config.method].quantization,
        },
    )
    if callbacks.should_stop():
        raise TrainingCancelled("Training was cancelled")
    extras = _LoopExtras(list(validation_samples), checkpoint_dir, resume_from)
    state, stopped_early = _loop(model, list(samples), pad_id, config, callbacks, extras)
    return TrainedModel(
        model,
        state.step,
        state.loss,
        state.train_seconds,
        state.tokens,
        best_step=state.best_step,
        best_val_loss=state.best_val_loss,
        stopped_early=stopped_early,
    )


@dataclass(frozen=True)
class _LoopExtras:
    validation: list[data.Sample]
    checkpoint_dir: Path | None
    resume_from: Path | None


def _loop(
    model: Any,
    samples: list[data.Sample],
    pad_id: int,
    config: TrainConfig,
    callbacks: TrainCallbacks,
    extras: _LoopExtras,
) -> tuple[checkpoints.LoopState, bool]:
    from transformers import get_scheduler

    device = next(model.parameters()).device
    settled = autoconfig.settled(config)
    accum = settled.gradient_accumulation_steps
    batches_per_epoch = math.ceil(len(samples) / settled.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / accum)
    total_steps = config.max_steps or max(1, math.ceil(steps_per_epoch * (settled.epochs or 1.0)))

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params,
        lr=settled.learning_rate,
        weight_decay=config.weight_decay,
        # One kernel for all adapters instead of several per tensor; CUDA only, so CPU runs
        # keep the reference implementation.
        fused=device.type == "cuda" or None,
    )
    scheduler_name: str = config.lr_scheduler
    if scheduler_name == "constant" and settled.warmup_steps:
        scheduler_name = "constant_with_warmup"  # plain "constant" would ignore the warmup
    scheduler = get_scheduler(
        scheduler_name,
        optimizer,
        num_warmup_steps=settled.warmup_steps,
        num_training_steps=total_steps,
    )
    lm = _forward_module(model)
    plan = plan_steps(lm, samples, config)
    samples_hash = checkpoints.samples_fingerprint(samples)
    restored: checkpoints.Restored | None = None
    if extras.resume_from is not None:
        restored = checkpoints.load_checkpoint(
            extras.resume_from,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            config=config,
            samples_hash=samples_hash,
        )
        callbacks.on_event(
            "info",
            f"Resuming from the checkpoint of step {restored.state.step}",
            {"step": restored.state.step, "checkpoint": restored.path.name},
        )

    with contextlib.ExitStack() as stack:
        fused_report = stack.enter_context(fused.fused_modules(model))
        if plan.packed:
            stack.enter_context(attention.packed_attention(lm))
        if plan.checkpointing:
            lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            stack.callback(lm.gradient_checkpointing_disable)
        callbacks.on_event(
            "info",
            "Training started",
            {
                "total_steps": total_steps,
                "samples": len(samples),
                "device": str(device),
                "packing": plan.packed,
                "micro_batch_tokens": plan.token_budget if plan.packed else None,
                "gradient_checkpointing": plan.checkpointing,
                "fused_layers": fused_report.lora_linear
                + fused_report.rms_norm
                + fused_report.gated_mlp,
            },
        )
        if plan.note and config.packing:
            callbacks.on_event("info", f"Batches are padded, not packed: {plan.note}.")
        if plan.checkpointing:
            callbacks.on_event(
                "info",
                "Gradient checkpointing is on: a forward pass over the longest samples would "
                "not fit in GPU memory without it (each step recomputes its forward pass, about "
                "half as much work again); a shorter max_seq_length avoids it.",
            )
        model.train()
        run = _Run(
            model=model,
            lm=lm,
            samples=samples,
            pad_id=pad_id,
            config=config,
            plan=plan,
            optimizer=optimizer,
            scheduler=scheduler,
            params=params,
            total_steps=total_steps,
            callbacks=callbacks,
            extras=extras,
            samples_hash=samples_hash,
        )
        return _steps(run, restored)


# Without checkpoint_every, a checkpoint this often bounds the work a re-queued job repeats.
CHECKPOINT_INTERVAL_SECONDS = 15 * 60


@dataclass(frozen=True)
class _Run:
    """What the step loop works with, made once by ``_loop``."""

    model: Any
    lm: Any
    samples: list[data.Sample]
    pad_id: int
    config: TrainConfig
    plan: StepPlan
    optimizer: torch.optim.Optimizer
    scheduler: Any
    params: list[torch.nn.Parameter]
    total_steps: int
    callbacks: TrainCallbacks
    extras: _LoopExtras
    samples_hash: str


def _steps(run: _Run, restored: checkpoints.Restored | None) -> tuple[checkpoints.LoopState, bool]:
    """The optimiser steps from the start, or from a checkpoint's position, to the end.

    Each step trains, evaluates if due, is reported, and is checkpointed if due, in that
    order: a checkpoint holds its own step's evaluation, and every step is reported before a
    checkpoint can include it, so a resumed run reports again at most the steps after its
    checkpoint (which the job's recorder overwrites). Returns the final loop state and
    whether early stopping ended the run.
    """
    config, callbacks = run.config, run.callbacks
    numbers = autoconfig.settled(config)
    device = next(run.model.parameters()).device
    accum = numbers.gradient_accumulation_steps
    state = restored.state if restored is not None else checkpoints.LoopState()
    validation = run.extras.validation
    eval_every = config.eval_every or max(1, math.ceil(run.total_steps / 10))
    patience = config.early_stopping_patience if validation else None
    # A checkpoint written when early stopping ended its run ends the resumed one too.
    stopped_early = patience is not None and state.evals_without_improvement >= patience
    if restored is not None:
        # Last, after everything that may have drawn random numbers (the adapter's
        # initialisation, loading): the next dropout mask is the one the interrupted run drew.
        restored.restore_rng()
    started = last_saved = time.perf_counter()
    seconds_before, steps_here = state.train_seconds, 0
    batches: list[list[data.Sample]] = []
    batches_epoch = -1
    while state.step < run.total_steps and not stopped_early:
        if callbacks.should_stop():
            raise TrainingCancelled("Training was cancelled")
        if batches_epoch != state.epoch:
            batches = data.make_batches(
                run.samples, numbers.batch_size, seed=config.seed, epoch=state.epoch
            )
            batches_epoch = state.epoch
        step_started = time.perf_counter()
        first = state.batch_index
        group = batches[first : first + accum]
        micro = micro_batches(group, run.plan, run.pad_id)
        answer_tokens = sum(packing.answer_token_count(s) for b in group for s in b)
        loss_value, tokens = optimiser_step(run.lm, micro, answer_tokens, run.plan, device)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(run.params, config.max_grad_norm))
        learning_rate = run.scheduler.get_last_lr()[0]
        run.optimizer.step()
        run.scheduler.step()
        run.optimizer.zero_grad(set_to_none=True)
        step = state.step + 1
        if not math.isfinite(loss_value):
            raise TrainingError(
                f"The loss became {loss_value} at step {step}; lower the learning rate."
            )
        step_seconds = time.perf_counter() - step_started
        done = min(first + accum, len(batches))
        epoch_reached = state.epoch + done / len(batches)
        state.step, state.loss, state.tokens = step, loss_value, state.tokens + tokens
        if done == len(batches):
            state.epoch, state.batch_index = state.epoch + 1, 0
        else:
            state.batch_index = done
        val_loss = None
        if validation and (step % eval_every == 0 or step == run.total_steps):
            val_loss = _evaluate(run, validation, device)
            state.record_validation(val_loss, step, config.early_stopping_min_delta)
            stopped_early = patience is not None and state.evals_without_improvement >= patience
        steps_here += 1
        now = time.perf_counter()
        state.train_seconds = seconds_before + (now - started)
        remaining = 0 if stopped_early else run.total_steps - step
        callbacks.on_step(
            StepMetrics(
                step=step,
                total_steps=run.total_steps,
                epoch=epoch_reached,
                loss=loss_value,
                learning_rate=learning_rate,
                grad_norm=grad_norm,
                tokens_per_second=tokens / step_seconds if step_seconds > 0 else 0.0,
                tokens=tokens,
                eta_seconds=(now - started) / steps_here * remaining,
                gpu_memory_bytes=_gpu_memory(device),
                val_loss=val_loss,
            )
        )
        if stopped_early:
            _report_early_stop(run, state, patience or 0)
        finished = stopped_early or step >= run.total_steps
        if run.extras.checkpoint_dir is not None and (
            finished or _checkpoint_due(config, step, now - last_saved)
        ):
            _save_checkpoint(run, run.extras.checkpoint_dir, state)
            last_saved = time.perf_counter()
    return state, stopped_early


def _checkpoint_due(config: TrainConfig, step: int, since_last: float) -> bool:
    if config.checkpoint_every is not None:
        return step % config.checkpoint_every == 0
    return since_last >= CHECKPOINT_INTERVAL_SECONDS


def _save_checkpoint(run: _Run, directory: Path, state: checkpoints.LoopState) -> None:
    path = checkpoints.save_checkpoint(
        directory,
        model=run.model,
        optimizer=run.optimizer,
        scheduler=run.scheduler,
        state=state,
        config=run.config,
        samples_hash=run.samples_hash,
        keep=run.config.keep_checkpoints,
    )
    if path is not None:
        run.callbacks.on_event(
            "info",
            f"Checkpoint saved at step {state.step}",
            {"step": state.step, "checkpoint": path.name},
        )


def _evaluate(run: _Run, samples: list[data.Sample], device: torch.device) -> float:
    run.model.eval()  # no dropout
    try:
        batch_size = autoconfig.settled(run.config).batch_size
        return validation_loss(run.lm, samples, run.plan, run.pad_id, batch_size, device)
    finally:
        run.model.train()


def _report_early_stop(run: _Run, state: checkpoints.LoopState, patience: int) -> None:
    delta = run.config.early_stopping_min_delta
    by = f" by more than {delta:g}" if delta else ""
    run.callbacks.on_event(
        "info",
        f"Stopped early at step {state.step} of {run.total_steps}: the validation loss has "
        f"not improved{by} in {patience} evaluations. The best, {state.best_val_loss:.4f}, "
        f"was at step {state.best_step}; the weights saved are the last step's "
        f"(step {state.step}).",
        {
            "step": state.step,
            "best_step": state.best_step,
            "best_val_loss": state.best_val_loss,
            "patience": patience,
        },
    )


def _gpu_memory(device: torch.device) -> int | None:
    """Peak GPU memory allocated by this process so far; None off the GPU, where the
    process's memory says little about the model."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return None


def _forward_module(model: Any) -> Any:
    """What each forward pass calls: the causal LM with the adapters inside its layers; the
    PEFT model itself for prompt learning, whose forward adds the virtual tokens; the model
    as loaded for full fine-tuning."""
    peft_config = getattr(model, "active_peft_config", None)
    if peft_config is None:
        return model
    return model if peft_config.is_prompt_learning else model.get_base_model()


def _check_full_fine_tuning_fits(model: Any, device: torch.device) -> None:
    if device.type != "cuda":
        return
    count = sum(p.numel() for p in model.parameters())
    # Loaded weights are already on the GPU; gradients and AdamW's two moments (float32)
    # come on top, before any activations.
    needed = 12 * count
    free, _ = torch.cuda.mem_get_info(device)
    if needed > free:
        raise TrainingError(
            f"Full fine-tuning of this {_human(count)}-parameter model needs about "
            f"{needed / 2**30:.0f} GiB more GPU memory for gradients and optimiser state; "
            f"{free / 2**30:.0f} GiB are free. Choose LoRA or QLoRA, or a smaller model."
        )


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    try:
        import numpy

        numpy.random.seed(seed % 2**32)
    except ImportError:
        pass


def _human(count: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= size:
            return f"{count / size:.1f}{unit}"
    return str(count)


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
