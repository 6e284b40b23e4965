"""The step loop: each optimiser step trained, evaluated when due, reported (with its ETA),
checked for early stopping and checkpointed when due, from the start or from a checkpoint's
position to the end. ``trainer`` builds everything it works with."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from worker.spec import autoconfig
from worker.spec.config import TrainConfig
from worker.spec.errors import TrainingCancelled, TrainingError
from worker.spec.validation import validation_interval
from worker.training import budget, checkpoints, compiled, data, packing
from worker.training.callbacks import StepMetrics, TrainCallbacks, checkpoint_on_stop
from worker.training.ranks import Ranks, Replicas, Sharded, whole
from worker.training.steps import StepPlan, micro_batches, validation_sums

# Without checkpoint_every, a checkpoint this often bounds the work a re-queued job repeats.
CHECKPOINT_INTERVAL_SECONDS = 15 * 60


@dataclass(frozen=True)
class LoopExtras:
    """What ``train_model`` was given beyond the model, the samples and the config."""

    validation: list[data.Sample]
    checkpoint_dir: Path | None
    resume_from: Path | None
    device: torch.device | None = None  # where it trains, if not where the weights are


@dataclass(frozen=True)
class Run:
    """What the step loop works with, made once by ``trainer._loop``."""

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
    extras: LoopExtras
    samples_hash: str
    # A multi-process run (see ``ranks``): this process's rank, and the model under DDP.
    ranks: Ranks = field(default_factory=Ranks)
    replicas: Replicas | Sharded | None = None


def run_steps(
    run: Run, restored: checkpoints.Restored | None
) -> tuple[checkpoints.LoopState, bool]:
    """The optimiser steps, with the decoder layers compiled when the plan says so (see
    ``compiled``); see ``_run_steps``."""
    if run.plan.graphs:
        run.callbacks.on_event(
            "info",
            f"Training passes are recorded as CUDA graphs and replayed ({run.plan.graphs_note}); "
            "rows are packed into a few fixed shapes, each recorded at its first pass.",
            {"cuda_graphs": True},
        )
    if not run.plan.compiled:
        return _run_steps(run, restored)
    with contextlib.ExitStack() as stack:
        layers = stack.enter_context(compiled.compiled_layers(run.lm))
        run.callbacks.on_event(
            "info",
            f"Compiling {layers} decoder layers ({run.plan.compile_note}); the first steps "
            "include the compile time.",
            {"compiled_layers": layers, "compile_cache": str(compiled.cache_dir())},
        )
        return _run_steps(run, restored)


def _run_steps(
    run: Run, restored: checkpoints.Restored | None
) -> tuple[checkpoints.LoopState, bool]:
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
    eval_every = validation_interval(run.total_steps, config.eval_every)
    patience = config.early_stopping_patience if validation else None
    # A checkpoint written when early stopping ended its run ends the resumed one too.
    stopped_early = patience is not None and state.evals_without_improvement >= patience
    if restored is not None:
        # Last, after everything that may have drawn random numbers (the adapter's
        # initialisation, loading): the next dropout mask is the one the interrupted run drew.
        restored.restore_rng(run.ranks.rank, run.ranks.world)
    # Halves the pass size and retries a step that runs out of GPU memory (see budget).
    fitter = budget.StepFitter(run.plan, on_event=callbacks.on_event)
    started = last_saved = time.perf_counter()
    seconds_before, steps_here = state.train_seconds, 0
    saved_step = state.step  # the newest step a checkpoint holds (or the start)
    batches: list[list[data.Sample]] = []
    batches_epoch = -1
    ahead: _Ahead | None = None  # the next step's rows, made while the GPU ran this one
    while state.step < run.total_steps and not stopped_early:
        if callbacks.should_stop():
            # Keep what was trained: the steps since the last checkpoint are saved (cheap next
            # to a step: the trainable weights and the optimiser state), so a cancelled run
            # can be resumed or exported from where it stopped.
            if (
                run.extras.checkpoint_dir is not None
                and state.step > saved_step
                and checkpoint_on_stop(callbacks)
            ):
                _save_checkpoint(run, run.extras.checkpoint_dir, state)
            raise TrainingCancelled("Training was cancelled")
        if batches_epoch != state.epoch:
            batches = data.make_batches(
                run.samples, numbers.batch_size, seed=config.seed, epoch=state.epoch
            )
            batches_epoch = state.epoch
        step_started = time.perf_counter()
        run.ranks.exit_if_told(state.step + 1)
        first = state.batch_index
        group = batches[first : first + accum]
        if ahead is None or ahead.at != (state.epoch, first):
            ahead = _Ahead.of(run, fitter, group, (state.epoch, first), numbers.batch_size)
        loss, tokens = fitter.step(
            run.lm,
            ahead.share,
            run.pad_id,
            ahead.answer_tokens,
            run.optimizer,
            device,
            replicas=run.replicas,
            filler=_filler(run, group) if run.replicas is not None else None,
            prepared=ahead.passes,
        )
        norm = torch.nn.utils.clip_grad_norm_(run.params, config.max_grad_norm)
        learning_rate = run.scheduler.get_last_lr()[0]
        run.optimizer.step()
        run.scheduler.step()
        run.optimizer.zero_grad(set_to_none=not fitter.graphed)
        # Nothing above has waited for the GPU: while it works through this step, the host
        # makes the next step's rows (same epoch), then reads this step's loss and norm.
        done = min(first + accum, len(batches))
        ahead = None
        if done < len(batches) and state.step + 1 < run.total_steps:
            upcoming = batches[done : done + accum]
            ahead = _Ahead.of(run, fitter, upcoming, (state.epoch, done), numbers.batch_size)
        loss_value = float(loss)
        grad_norm = float(whole(norm))  # the norm of sharded gradients is sharded too
        step = state.step + 1
        if not math.isfinite(loss_value):
            raise TrainingError(
                f"The loss became {loss_value} at step {step}; lower the learning rate."
            )
        step_seconds = time.perf_counter() - step_started
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
            stopped_early = run.ranks.agree(
                patience is not None and state.evals_without_improvement >= patience
            )
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
        if run.extras.checkpoint_dir is not None and run.ranks.agree(
            finished or _checkpoint_due(config, step, now - last_saved)
        ):
            _save_checkpoint(run, run.extras.checkpoint_dir, state)
            last_saved, saved_step = time.perf_counter(), state.step
    if fitter.recorded is not None and fitter.recorded.off is None:
        summary = fitter.recorded.summary()
        callbacks.on_event(
            "info",
            f"CUDA graphs: {summary['graphs_recorded']} row shapes recorded, "
            f"{summary['passes_replayed']} passes replayed ({summary['passes_widened']} of "
            f"them widened into a larger recorded shape), {summary['passes_plain']} run "
            "as usual (the first, and any of a shape past the recorded ones) and "
            f"{summary['passes_too_large']} too large to gain from replaying.",
            dict(summary),
        )
        fitter.recorded.release()  # their memory, for what follows training
    return state, stopped_early


@dataclass(frozen=True)
class _Ahead:
    """One step's samples made ready on the host: this process's share, its answer tokens
    and (packed or padded) passes, for the step at ``at`` (epoch, first batch)."""

    at: tuple[int, int]
    share: list[list[data.Sample]]
    answer_tokens: int
    passes: tuple[StepPlan, list[packing.MicroBatch]]

    @classmethod
    def of(
        cls,
        run: Run,
        fitter: budget.StepFitter,
        group: list[list[data.Sample]],
        at: tuple[int, int],
        batch_size: int,
    ) -> _Ahead:
        share = run.ranks.share(group, batch_size, run.plan.packed)
        answer_tokens = sum(packing.answer_token_count(s) for b in group for s in b)
        return cls(at, share, answer_tokens, fitter.prepare(share, run.pad_id))


def _checkpoint_due(config: TrainConfig, step: int, since_last: float) -> bool:
    if config.checkpoint_every is not None:
        return step % config.checkpoint_every == 0
    return since_last >= CHECKPOINT_INTERVAL_SECONDS


def _filler(run: Run, group: list[list[data.Sample]]) -> packing.MicroBatch:
    """The pass over the step's shortest sample whose backward all-reduces the gradients of
    a multi-process step (see ``ranks``)."""
    shortest = min((s for b in group for s in b), key=lambda s: len(s.input_ids))
    return micro_batches([[shortest]], run.plan, run.pad_id)[0]


def _save_checkpoint(run: Run, directory: Path, state: checkpoints.LoopState) -> None:
    # Every rank's random state, and sharded weights gathered whole (collectives); rank 0
    # alone writes.
    rank_rng = run.ranks.gather_rng()
    gathered = run.replicas.full_state(run.model, run.optimizer) if run.replicas else None
    if not run.ranks.main:
        return
    path = checkpoints.save_checkpoint(
        directory,
        model=run.model,
        optimizer=run.optimizer,
        scheduler=run.scheduler,
        state=state,
        config=run.config,
        samples_hash=run.samples_hash,
        keep=run.config.keep_checkpoints,
        rank_rng=rank_rng,
        whole=gathered,
    )
    if path is not None:
        run.callbacks.on_event(
            "info",
            f"Checkpoint saved at step {state.step}",
            {"step": state.step, "checkpoint": path.name},
        )


def _evaluate(run: Run, samples: list[data.Sample], device: torch.device) -> float:
    run.model.eval()  # no dropout
    try:
        batch_size = autoconfig.settled(run.config).batch_size
        # Each process its share (all of them in a one-process run), then the totals.
        shares = run.ranks.share([samples], batch_size, packed=True)
        mine = shares[0] if shares else []
        if isinstance(run.replicas, Sharded):  # every pass through the sharded model
            sums = run.replicas.validation_sums(
                mine, samples, run.plan, run.pad_id, batch_size, device
            )
        else:
            sums = validation_sums(run.lm, mine, run.plan, run.pad_id, batch_size, device)
        loss_sum, answer_tokens = run.ranks.total(sums)
        return loss_sum / max(1, answer_tokens)
    finally:
        run.model.train()


def _report_early_stop(run: Run, state: checkpoints.LoopState, patience: int) -> None:
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
