"""Training a loaded model: seed, add the config's adapter (or unfreeze every weight for full
fine-tuning), build the optimiser and scheduler, restore a checkpoint when resuming, patch the
model's modules for speed while training runs, and hand the steps to ``loop``."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from worker.spec import autoconfig
from worker.spec.config import TrainConfig
from worker.spec.errors import TrainingCancelled, TrainingError
from worker.spec.methods import METHODS
from worker.training import attention, checkpoints, cpu, data, fused, models
from worker.training.adapters import build_peft_config
from worker.training.callbacks import Silent, TrainCallbacks
from worker.training.loop import LoopExtras, Run, run_steps
from worker.training.ranks import Ranks, Replicas, Sharded, bring_to_device, decoder_layers
from worker.training.steps import plan_steps


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
    device: torch.device | None = None,
) -> TrainedModel:
    """Add the config's adapter to a loaded causal LM and train it on encoded ``samples``.

    The part of ``train`` after loading, public so a benchmark can run the very same loop on
    a model it built itself. The model's own modules are patched (fused layers, packed
    attention) only while training runs and restored before this returns. ``device``: where
    it trains, when that is not where its weights are (full fine-tuning over several GPUs
    loads the model into host memory; see ``ranks.bring_to_device``).
    """
    callbacks = callbacks or Silent()
    device = device or next(model.parameters()).device
    config = autoconfig.resolve_for_model(
        config, model=model, samples=samples, cpu=device.type == "cpu"
    )
    # Seeded right before the adapter is created so its initial weights, and the dropout
    # masks after them, depend on the seed alone and not on what loading consumed.
    _seed_everything(config.seed)
    from peft import get_peft_model

    peft_config = build_peft_config(config, model)
    ranks = Ranks.current()
    if peft_config is None:
        model.requires_grad_(True)
        _check_full_fine_tuning_fits(model, device, ranks.world)
        if ranks.several:
            compute = models.compute_dtype(config, device)
            bring_to_device(model, device, None if compute == torch.float32 else compute)
    else:
        model = get_peft_model(model, peft_config)
    if ranks.rank:
        # The adapter starts the same on every process; dropout masks differ from here.
        torch.manual_seed(config.seed * 1_000_003 + ranks.rank)
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
    extras = LoopExtras(list(validation_samples), checkpoint_dir, resume_from, device)
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


def _loop(
    model: Any,
    samples: list[data.Sample],
    pad_id: int,
    config: TrainConfig,
    callbacks: TrainCallbacks,
    extras: LoopExtras,
) -> tuple[checkpoints.LoopState, bool]:
    from transformers import get_scheduler

    device = extras.device or next(model.parameters()).device
    settled = autoconfig.settled(config)
    accum = settled.gradient_accumulation_steps
    batches_per_epoch = math.ceil(len(samples) / settled.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / accum)
    total_steps = config.max_steps or max(1, math.ceil(steps_per_epoch * (settled.epochs or 1.0)))

    lm = _forward_module(model)
    plan = plan_steps(lm, samples, config)
    ranks = Ranks.current()
    if ranks.several and plan.graphs:
        plan = dataclasses.replace(
            plan, graphs=False, graphs_note="several processes exchange gradients each pass"
        )
    # Full fine-tuning over several processes shards the weights (FSDP2) before the optimiser
    # takes them; adapters are replicated (DDP) once the model's modules are patched, below.
    sharded = Sharded(lm, plan, ranks) if ranks.several and not _adapted(model) else None
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

    # Before the fused forwards go in: from transformers 5.2x, train() and eval() re-run hub
    # kernelisation on models loaded with kernels on, which swaps every decorated module's
    # forward (dropping ours). Kernels stay off here; the engine's own fused layers stand in.
    models.disable_hub_kernels(model)
    model.train()
    threads = cpu.configure_threads() if device.type == "cpu" else None
    if device.type == "cpu":
        cpu.limit_heap_growth()
    with contextlib.ExitStack() as stack:
        fused_report = (
            stack.enter_context(fused.fused_modules(model))
            if plan.fused_layers
            else fused.FusedReport()
        )
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
                "fused_layers": fused_report.fused,
                "compute_dtype": _compute_dtype_name(model, plan),
                "cuda_graphs": plan.graphs,
                **({"cpu_threads": threads} if threads else {}),
                **({"processes": ranks.world} if ranks.several else {}),
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
        run = Run(
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
            ranks=ranks,
            replicas=sharded or (Replicas(lm, plan, ranks) if ranks.several else None),
        )
        result = run_steps(run, restored)
        lost = fused_report.lost()
        if lost:
            callbacks.on_event(
                "warning",
                f"{lost} of {fused_report.fused} fused layers were replaced during training by "
                "another library; those layers ran their own (slower) forward.",
                {"fused_layers_lost": lost},
            )
        return result


def _adapted(model: Any) -> bool:
    return getattr(model, "active_peft_config", None) is not None


def _compute_dtype_name(model: Any, plan: Any) -> str:
    if plan.autocast is not None:
        return str(plan.autocast).removeprefix("torch.")
    frozen = next((p for p in model.parameters() if not p.requires_grad), None)
    weights = frozen if frozen is not None else next(model.parameters())
    return str(weights.dtype).removeprefix("torch.")


def _forward_module(model: Any) -> Any:
    """What each forward pass calls: the causal LM with the adapters inside its layers; the
    PEFT model itself for prompt learning, whose forward adds the virtual tokens; the model
    as loaded for full fine-tuning."""
    peft_config = getattr(model, "active_peft_config", None)
    if peft_config is None:
        return model
    return model if peft_config.is_prompt_learning else model.get_base_model()


def _check_full_fine_tuning_fits(model: Any, device: torch.device, processes: int = 1) -> None:
    if device.type != "cuda":
        return
    count = sum(p.numel() for p in model.parameters())
    if next(model.parameters()).device.type == "cuda":
        # Loaded weights are already on the GPU; gradients and AdamW's two moments (float32)
        # come on top, before any activations; sharded across the processes of a multi-GPU
        # run (whose weights shrink to their share too).
        needed = 12 * count // processes - 4 * count * (processes - 1) // processes
    else:
        # Loaded into host memory (several GPUs): each GPU will hold its share of the float32
        # weights, their gradients and AdamW's two moments, and one whole part at a time
        # while the weights come over: a layer, or the rest (embeddings, head), moved whole.
        layers = [sum(p.numel() for p in layer.parameters()) for layer in decoder_layers(model)]
        rest = count - sum(layers)
        needed = 16 * count // processes + 4 * max([rest, *layers])
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
