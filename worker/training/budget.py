"""The token budget on the GPU a run has, and a step that halves it when it does not fit.

``plan_budget`` applies the rule of ``worker.spec.budget`` (the estimate applies the same rule
before the job is queued) to the memory this GPU reports free once the model and its adapter
are loaded. ``StepFitter`` runs each optimiser step; when a pass runs out of GPU memory it
drops the partial gradients, halves the token budget (for padded batches: the rows per pass),
says so in an event and runs the step again. The halved budget stays for the rest of the run.
Splitting a step differently does not change its gradient: every pass's loss is divided by the
answer tokens of the whole step.

``TUNELAB_SIMULATE_OOM_ABOVE_TOKENS`` makes any pass of more tokens than it says raise
``torch.OutOfMemoryError`` as it starts, as a GPU without room for it would: how the halving is
tested without a GPU, and how to try it on one.
"""

from __future__ import annotations

import dataclasses
import gc
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from worker.spec import autoconfig
from worker.spec import budget as rule
from worker.spec.config import TrainConfig
from worker.spec.errors import TrainingError
from worker.spec.formatting import Sample
from worker.training import kernels
from worker.training.graphs import PassGraphs
from worker.training.packing import MicroBatch, collate_padded, layer_weights
from worker.training.steps import StepPlan, micro_batch_loss, micro_batches, optimiser_step

if TYPE_CHECKING:
    from worker.training.ranks import Replicas, Sharded

SIMULATE_ENV = "TUNELAB_SIMULATE_OOM_ABOVE_TOKENS"


def model_shape(model_config: Any) -> rule.ModelShape:
    hidden = int(getattr(model_config, "hidden_size", 0) or 4096)
    return rule.ModelShape(
        hidden_size=hidden,
        intermediate_size=int(getattr(model_config, "intermediate_size", 0) or 4 * hidden),
        layers=int(getattr(model_config, "num_hidden_layers", 0) or 32),
        layer_weights=layer_weights(model_config),
    )


def plan_budget(
    lm: Any, config: TrainConfig, longest_pass: int, device: torch.device
) -> rule.Budget:
    """The token budget and checkpointing decision for this GPU's free memory.

    ``longest_pass`` is the fewest tokens a pass must hold: the longest sample for packed
    rows, a whole padded batch otherwise.
    """
    shape = model_shape(lm.config)
    settled = autoconfig.settled(config)
    per_token = rule.activation_bytes_per_token(
        shape,
        lora_dropout=float(settled.lora_dropout or 0.0),
        method=config.method,
        dora=bool(getattr(config, "use_dora", False)),
        # Masks are kept unless the dropout kernels run (on, Triton here, rank in range).
        masks=rule.masks_kept(settled.lora_r) or not (kernels.DROPOUT and kernels.available()),
    )
    trainable = sum(p.numel() for p in lm.parameters() if p.requires_grad)
    fixed = rule.fixed_bytes(trainable=trainable, shape=shape, quantized=config.method == "qlora")
    free, _ = torch.cuda.mem_get_info(device)
    return rule.token_budget(
        free_bytes=int(free),
        fixed=fixed,
        per_token=per_token,
        longest=longest_pass,
        explicit=config.micro_batch_tokens,
        cap=rule.largest_useful(shape),
    )


class StepFitter:
    """Runs optimiser steps, halving the pass size whenever one runs out of GPU memory."""

    def __init__(
        self,
        plan: StepPlan,
        *,
        on_event: Callable[[str, str, dict[str, Any] | None], None],
        simulate_limit: int | None = None,
    ) -> None:
        self.plan = plan
        self.rows: int | None = None  # padded batches: rows per pass once halved
        self.on_event = on_event
        env = os.environ.get(SIMULATE_ENV)
        self.simulate_limit = simulate_limit or (int(env) if env else None)
        # The run's recorded passes (see ``graphs``), when the plan replays them.
        self.recorded = (
            PassGraphs(lambda lm, batch: micro_batch_loss(lm, batch, self.plan), on_event)
            if plan.graphs
            else None
        )

    @property
    def graphed(self) -> bool:
        """Whether passes replay CUDA graphs, whose backward adds into the gradients in
        place: they must then be zeroed in place between steps, never dropped."""
        return self.recorded is not None and self.recorded.off is None

    def passes(self, group: Sequence[Sequence[Sample]], pad_id: int) -> list[MicroBatch]:
        if self.plan.packed or self.rows is None:
            return micro_batches(group, self.plan, pad_id)
        rows = self.rows
        return [
            collate_padded(batch[start : start + rows], pad_id)
            for batch in group
            for start in range(0, len(batch), rows)
        ]

    def prepare(
        self, group: Sequence[Sequence[Sample]], pad_id: int
    ) -> tuple[StepPlan, list[MicroBatch]]:
        """A step's passes made ahead of it (on the host, while the GPU works through the
        step before), with the plan they were made for: ``step`` takes them while that plan
        still holds."""
        self._graphs_gone()
        return self.plan, self.passes(group, pad_id)

    def step(
        self,
        lm: Any,
        group: Sequence[Sequence[Sample]],
        pad_id: int,
        answer_tokens: int,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        replicas: Replicas | Sharded | None = None,
        filler: MicroBatch | None = None,
        prepared: tuple[StepPlan, list[MicroBatch]] | None = None,
    ) -> tuple[torch.Tensor | float, int]:
        """Forward and backward of one step (see ``steps.optimiser_step``), refitted until
        it fits. Returns the step's mean loss (a device tensor not yet read, or a number) and
        its tokens. With ``replicas`` (a multi-process run), ``group`` is this process's share
        of the step and the passes run through DDP (see ``ranks``). ``prepared``: its passes
        from ``prepare``, used if the plan is still the one they were made for."""
        self._graphs_gone()
        while True:
            if prepared is not None and prepared[0] is self.plan:
                micro = prepared[1]
            else:
                micro = self.passes(group, pad_id)
            prepared = None  # a retry makes them again, for the halved plan
            try:
                with self._simulated(lm):
                    if replicas is not None and filler is not None:
                        return replicas.step(micro, filler, answer_tokens, self.plan, device)
                    return optimiser_step(
                        lm, micro, answer_tokens, self.plan, device, self.recorded
                    )
            except torch.OutOfMemoryError:
                largest = max(b.tokens for b in micro)
                if replicas is not None and not replicas.halves_alone:
                    raise self._sharded_halving(group, largest) from None
            # Outside the handler: the traceback no longer holds the pass's tensors.
            del micro
            optimizer.zero_grad(set_to_none=True)
            if self.recorded is not None and self.recorded.off is None and self.recorded.graphs:
                # The graphs' memory first: the same budget may fit without them.
                self.recorded.stop("a pass ran out of GPU memory beside the recorded ones")
                _release(device)
                continue
            _release(device)
            self._halve(group, largest)

    def _graphs_gone(self) -> None:
        if self.plan.graphs and self.recorded is not None and self.recorded.off is not None:
            # Graphs are off for the rest of the run: plain rows again, without the filler.
            self.plan = dataclasses.replace(self.plan, graphs=False)

    def _sharded_halving(
        self, group: Sequence[Sequence[Sample]], largest: int
    ) -> ShardedPassTooLarge | TrainingError:
        """What ends a sharded run whose pass did not fit: the budget to restart at."""
        if not self.plan.packed:
            return TrainingError(
                f"A padded batch did not fit in GPU memory on a sharded run; lower batch_size "
                f"or max_seq_length (the longest sample here has {_longest(group):,} tokens)."
            )
        try:
            old, new = self._halved_budget(group, largest)
        except TrainingError as exc:
            return exc
        return ShardedPassTooLarge(largest, old, new)

    def _halved_budget(self, group: Sequence[Sequence[Sample]], largest: int) -> tuple[int, int]:
        """The packed token budget and half of what failed (at least the longest sample)."""
        longest = _longest(group)
        old = self.plan.token_budget
        new = max(longest, min(old, largest) // 2)
        if new >= min(old, largest):
            raise TrainingError(_no_room(longest))
        return old, new

    def _halve(self, group: Sequence[Sequence[Sample]], largest: int) -> None:
        if self.plan.packed:
            old, new = self._halved_budget(group, largest)
            self.plan = dataclasses.replace(self.plan, token_budget=new)
            self.on_event(
                "warning",
                f"A forward pass of {largest:,} tokens did not fit in GPU memory: the token "
                f"budget is halved from {old:,} to {new:,} and the step retried (this run "
                "keeps the smaller budget; micro_batch_tokens sets one).",
                {"micro_batch_tokens": new, "previous_micro_batch_tokens": old},
            )
            return
        widest = max((len(b) for b in group), default=1)
        old_rows = self.rows or widest
        if old_rows <= 1:
            raise TrainingError(_no_room(_longest(group)))
        self.rows = old_rows // 2
        self.on_event(
            "warning",
            f"A padded batch of {old_rows} rows did not fit in GPU memory: each batch now "
            f"runs in passes of {self.rows} rows, and the step was retried.",
            {"rows_per_pass": self.rows, "previous_rows_per_pass": old_rows},
        )

    def _simulated(self, lm: Any) -> Any:
        limit = self.simulate_limit
        if limit is None:
            return _Nothing()
        return _RaiseAbove(_decoder(lm), limit)


class ShardedPassTooLarge(TrainingError):
    """A pass of a sharded run ran out of GPU memory. Every process gathers each layer's
    weights for every pass, so one cannot retry with smaller passes while the others wait in
    its collectives: the process ends with this, and the parent (``distributed``) restarts
    them all with ``budget`` tokens a pass from the newest checkpoint."""

    def __init__(self, largest: int, previous: int, budget: int) -> None:
        super().__init__(
            f"A forward pass of {largest:,} tokens did not fit in GPU memory on a sharded run "
            f"(token budget {previous:,})."
        )
        self.largest, self.previous, self.budget = largest, previous, budget


def _longest(group: Sequence[Sequence[Sample]]) -> int:
    return max((len(s.input_ids) for b in group for s in b), default=1)


def _no_room(longest: int) -> str:
    return (
        f"Out of GPU memory on a forward pass of one sample ({longest:,} tokens) even after "
        "halving the pass size; lower max_seq_length, or choose QLoRA or a smaller model."
    )


def _decoder(lm: Any) -> torch.nn.Module:
    get = getattr(lm, "get_decoder", None)
    decoder = get() if callable(get) else None
    return decoder if isinstance(decoder, torch.nn.Module) else lm


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: Any) -> None:
        return None


class _RaiseAbove:
    """A forward pre-hook raising OutOfMemoryError for passes of more than ``limit`` tokens."""

    def __init__(self, module: torch.nn.Module, limit: int) -> None:
        self.module, self.limit = module, limit
        self.handle: Any = None

    def _hook(self, _module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if isinstance(ids, torch.Tensor) and ids.numel() > self.limit:
            raise torch.OutOfMemoryError(
                f"simulated: a pass of {ids.numel()} tokens, over {self.limit} ({SIMULATE_ENV})"
            )

    def __enter__(self) -> None:
        self.handle = self.module.register_forward_pre_hook(self._hook, with_kwargs=True)

    def __exit__(self, *_: Any) -> None:
        self.handle.remove()
