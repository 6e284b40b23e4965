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

from worker.training import attention, data, fused, models, packing
from worker.training.config import TrainConfig
from worker.training.errors import TrainingCancelled, TrainingError
from worker.training.methods import build_peft_config
from worker.training.steps import StepPlan, micro_batches, optimiser_step, plan_steps

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
) -> TrainResult:
    """Fine-tune ``config.base_model`` on ``records`` and save the adapter to ``output_dir``.

    ``output_dir`` appears only when the run succeeds: the adapter is written to a staging
    folder beside it and renamed into place, so a failed or cancelled run leaves nothing
    half-written for a later step to pick up. Failures raise TrainingError with a message
    meant for the person who started the run; cancellation raises TrainingCancelled.
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
        steps, final_loss, seconds, tokens = _run(
            config, records, staging, Path(model_cache_dir), callbacks, allow_downloads
        )
        staging.rename(output_dir)
        staging = None
        callbacks.on_event("info", "Done", {"steps": steps, "final_loss": final_loss})
    except (TrainingError, TrainingCancelled):
        raise
    except Exception as exc:
        raise TrainingError(_explain(exc)) from exc
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    files = sorted(p for p in output_dir.rglob("*") if p.is_file())
    return TrainResult(steps, final_loss, output_dir, seconds, tokens, files)


def _run(
    config: TrainConfig,
    records: Sequence[dict[str, Any]],
    staging: Path,
    model_cache_dir: Path,
    callbacks: TrainCallbacks,
    allow_downloads: bool,
) -> tuple[int, float, float, int]:
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

    samples = _prepare(config, records, tokenizer, callbacks)
    stop_if_asked()

    device, dtype = models.pick_device_and_dtype(config.dtype)
    model = models.load_model(
        resolved,
        dtype=dtype,
        device=device,
        trust_remote_code=config.trust_remote_code,
        allow_pickle_weights=config.allow_pickle_weights,
    )
    stop_if_asked()
    trained = train_model(model, samples, config, pad_id=pad_id, callbacks=callbacks)
    stop_if_asked()

    info("Saving adapter")
    trained.model.save_pretrained(str(staging), safe_serialization=True)
    tokenizer.save_pretrained(str(staging))
    return trained.steps, trained.final_loss, trained.seconds, trained.tokens


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
        max_seq_length=config.max_seq_length,
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


@dataclass
class TrainedModel:
    """What ``train_model`` returns: the adapted model and how training went."""

    model: Any  # the PEFT-wrapped model, ready for save_pretrained
    steps: int
    final_loss: float
    seconds: float
    tokens: int


def train_model(
    model: Any,
    samples: Sequence[data.Sample],
    config: TrainConfig,
    *,
    pad_id: int,
    callbacks: TrainCallbacks | None = None,
) -> TrainedModel:
    """Add the config's adapter to a loaded causal LM and train it on encoded ``samples``.

    The part of ``train`` after loading, public so a benchmark can run the very same loop on
    a model it built itself. The model's own modules are patched (fused layers, packed
    attention) only while training runs and restored before this returns.
    """
    callbacks = callbacks or _Silent()
    device = next(model.parameters()).device
    # Seeded right before the adapter is created so its initial weights, and the dropout
    # masks after them, depend on the seed alone and not on what loading consumed.
    _seed_everything(config.seed)
    from peft import get_peft_model

    model = get_peft_model(model, build_peft_config(config, model))
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    dtype = next((p.dtype for p in model.parameters() if not p.requires_grad), torch.float32)
    callbacks.on_event(
        "info",
        f"Model loaded ({_human(total)} parameters, {_human(trainable)} trainable)",
        {
            "parameters": total,
            "trainable": trainable,
            "device": str(device),
            "dtype": str(dtype).removeprefix("torch."),
        },
    )
    if callbacks.should_stop():
        raise TrainingCancelled("Training was cancelled")
    steps, final_loss, seconds, tokens = _loop(model, list(samples), pad_id, config, callbacks)
    return TrainedModel(model, steps, final_loss, seconds, tokens)


def _loop(
    model: Any,
    samples: list[data.Sample],
    pad_id: int,
    config: TrainConfig,
    callbacks: TrainCallbacks,
) -> tuple[int, float, float, int]:
    from transformers import get_scheduler

    device = next(model.parameters()).device
    accum = config.gradient_accumulation_steps
    batches_per_epoch = math.ceil(len(samples) / config.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / accum)
    total_steps = config.max_steps or max(1, math.ceil(steps_per_epoch * (config.epochs or 1.0)))

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params,
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
        # One kernel for all adapters instead of several per tensor; CUDA only, so CPU runs
        # keep the reference implementation.
        fused=device.type == "cuda" or None,
    )
    scheduler_name: str = config.lr_scheduler
    if scheduler_name == "constant" and config.warmup_steps:
        scheduler_name = "constant_with_warmup"  # plain "constant" would ignore the warmup
    scheduler = get_scheduler(
        scheduler_name,
        optimizer,
        num_warmup_steps=config.warmup_steps,
        num_training_steps=total_steps,
    )
    lm = model.get_base_model()
    plan = plan_steps(lm, samples, config)

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
        return _steps(
            model,
            lm,
            samples,
            pad_id,
            config,
            plan,
            optimizer,
            scheduler,
            params,
            total_steps,
            callbacks,
        )


def _steps(
    model: Any,
    lm: Any,
    samples: list[data.Sample],
    pad_id: int,
    config: TrainConfig,
    plan: StepPlan,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    params: list[torch.nn.Parameter],
    total_steps: int,
    callbacks: TrainCallbacks,
) -> tuple[int, float, float, int]:
    device = next(model.parameters()).device
    accum = config.gradient_accumulation_steps
    step, loss_value, tokens_total = 0, float("nan"), 0
    started = time.perf_counter()
    epoch = 0
    while step < total_steps:
        batches = data.make_batches(samples, config.batch_size, seed=config.seed, epoch=epoch)
        for first in range(0, len(batches), accum):
            if step >= total_steps:
                break
            if callbacks.should_stop():
                raise TrainingCancelled("Training was cancelled")
            step_started = time.perf_counter()
            group = batches[first : first + accum]
            micro = micro_batches(group, plan, pad_id)
            answer_tokens = sum(packing.answer_token_count(s) for b in group for s in b)
            loss_value, tokens = optimiser_step(lm, micro, answer_tokens, plan, device)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm))
            learning_rate = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if not math.isfinite(loss_value):
                raise TrainingError(
                    f"The loss became {loss_value} at step {step}; lower the learning rate."
                )
            tokens_total += tokens
            elapsed = time.perf_counter() - step_started
            done = min(first + accum, len(batches))
            callbacks.on_step(
                StepMetrics(
                    step=step,
                    total_steps=total_steps,
                    epoch=epoch + done / len(batches),
                    loss=loss_value,
                    learning_rate=learning_rate,
                    grad_norm=grad_norm,
                    tokens_per_second=tokens / elapsed if elapsed > 0 else 0.0,
                    tokens=tokens,
                )
            )
        epoch += 1
    return step, loss_value, time.perf_counter() - started, tokens_total


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
