"""One optimiser step: how its samples become forward passes and how each pass's loss is
computed.

The plan is made once per run. Models whose attention can be packed (see ``attention``) get
their step's samples packed into rows under a token budget (see ``packing``); others get the
step's batches padded. Either way the loss covers the answer positions only and, for the
model types listed in ``_PLAIN_HEAD_TYPES``, comes from the decoder's hidden states without
full-vocabulary logits (see ``loss``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from worker.spec import autoconfig
from worker.spec.config import TrainConfig
from worker.spec.formatting import Sample
from worker.training import attention, compiled, cpu, graphs, models
from worker.training.loss import DEFAULT_CHUNK_ELEMENTS, linear_cross_entropy_sum
from worker.training.packing import (
    MicroBatch,
    bucket_length,
    collate_packed,
    collate_padded,
    default_token_budget,
    graph_row,
    pack,
    segment_bound,
)


@dataclass(frozen=True)
class StepPlan:
    """How each optimiser step runs, decided once per run from the model and the data."""

    packed: bool
    token_budget: int
    checkpointing: bool
    fused_head: bool
    note: str  # why packing is off, when it is
    # The dtype forward passes compute in when the weights are float32 masters (full
    # fine-tuning); None runs them in the weights' own dtype.
    autocast: torch.dtype | None = None
    # The engine's fused layers (GPU), or PyTorch's own (CPU: see worker.training.cpu).
    fused_layers: bool = True
    # Float32 logits per chunk of the loss head (see loss).
    loss_chunk_elements: int = DEFAULT_CHUNK_ELEMENTS
    # Decoder layers run through torch.compile (see compiled; with CUDA graphs, packed rows
    # padded to a few fixed lengths); why or why not.
    compiled: bool = False
    compile_note: str = ""
    # Packed rows padded to a multiple of this many tokens, and the loss head's products to
    # a multiple of loss_row_multiple rows (CPU: a few shapes, see cpu).
    row_multiple: int | None = None
    loss_row_multiple: int | None = None
    # Training passes recorded once per row shape as CUDA graphs and replayed (see graphs;
    # rows packed into a few fixed shapes); why or why not.
    graphs: bool = False
    graphs_note: str = ""
    # The most real tokens of a recorded pass; larger ones run as usual (None: any).
    graph_tokens: int | None = None
    # The longest segment every recorded pass's attention is sized for: one value for the
    # whole run (the next power of two above its longest sample), so it adds no shapes.
    graph_bound: int | None = None


def plan_steps(lm: Any, samples: Sequence[Sample], config: TrainConfig) -> StepPlan:
    """Packed or padded rows, the token budget per packed row, and checkpointing if needed."""
    note = "" if config.packing else "packing is off in the run config"
    prompt_learning = _prompt_learning(lm)
    if config.packing:
        if prompt_learning:
            note = "prefix-tuning and P-tuning put their virtual tokens before every sample"
        else:
            note = attention.unsupported_reason(lm) or ""
    packed = not note
    longest = max(len(s.input_ids) for s in samples)
    budget = config.micro_batch_tokens or default_token_budget(lm.config)
    budget = max(budget, longest)
    checkpointing = False
    device = next(lm.parameters()).device
    if device.type == "cuda":
        budget, checkpointing = _fit_in_memory(lm, budget, longest, config, device, packed)
    autocast = None
    weights = next(lm.parameters())
    if weights.requires_grad and weights.dtype == torch.float32:
        compute = models.compute_dtype(config, device)
        autocast = None if compute == torch.float32 else compute
    fused_head = _plain_head(lm) and not prompt_learning
    use_graphs, graphs_note = graphs.decide(
        lm,
        device,
        packed=packed,
        checkpointing=checkpointing,
        fused_head=fused_head,
        autocast=autocast,
        method=config.method,
        dora=bool(getattr(config, "use_dora", False)),
        run_passes=_run_passes(samples, config, budget),
    )
    compile_layers, compile_note = compiled.decide(
        lm,
        device,
        packed=packed,
        checkpointing=checkpointing,
        method=config.method,
        dora=bool(getattr(config, "use_dora", False)),
        run_tokens=run_tokens(samples, config),
    )
    if use_graphs and compile_layers:
        use_graphs, graphs_note = False, "the decoder layers are compiled instead"
    if device.type == "cpu":
        return StepPlan(
            packed,
            max(config.micro_batch_tokens or cpu.CPU_TOKEN_BUDGET, longest),
            checkpointing,
            fused_head,
            note,
            autocast,
            fused_layers=cpu.FUSED_LAYERS,
            loss_chunk_elements=cpu.CPU_CHUNK_ELEMENTS,
            compiled=compile_layers,
            compile_note=compile_note,
            row_multiple=cpu.CPU_ROW_MULTIPLE,
            loss_row_multiple=cpu.CPU_LOSS_ROW_MULTIPLE,
            graphs_note=graphs_note,
        )
    return StepPlan(
        packed,
        budget,
        checkpointing,
        fused_head,
        note,
        autocast,
        compiled=compile_layers,
        compile_note=compile_note,
        graphs=use_graphs,
        graphs_note=graphs_note,
        graph_tokens=graphs.row_limit(lm.config) if use_graphs else None,
        graph_bound=segment_bound(longest) if use_graphs else None,
    )


def run_tokens(samples: Sequence[Sample], config: TrainConfig) -> float | None:
    """The tokens a run trains on: its steps times the samples per step at the data's mean
    length, or its epochs over the data; None while a setting it needs is still auto."""
    if not samples:
        return None
    tokens = sum(len(s.input_ids) for s in samples)
    if config.max_steps:
        batch, accum = config.batch_size, config.gradient_accumulation_steps
        if not isinstance(batch, int) or not isinstance(accum, int):
            return None
        return tokens / len(samples) * batch * accum * config.max_steps
    epochs = 1.0 if config.epochs is None else config.epochs  # None trains one epoch
    return tokens * float(epochs) if isinstance(epochs, int | float) else None


def _run_passes(samples: Sequence[Sample], config: TrainConfig, budget: int) -> float | None:
    """The packed passes of the whole run: its tokens over the tokens of a pass (a step's
    tokens, or the budget when a step takes several); None while a setting is still auto."""
    tokens = run_tokens(samples, config)
    batch, accum = config.batch_size, config.gradient_accumulation_steps
    if tokens is None or not isinstance(batch, int) or not isinstance(accum, int):
        return None
    step = sum(len(s.input_ids) for s in samples) / len(samples) * batch * accum
    return tokens / max(1.0, min(float(budget), step))


def _prompt_learning(lm: Any) -> bool:
    # The PEFT model itself runs the forward pass only for prompt learning (see engine).
    peft_config = getattr(lm, "active_peft_config", None)
    return bool(peft_config is not None and peft_config.is_prompt_learning)


def _fit_in_memory(
    lm: Any,
    budget: int,
    longest: int,
    config: TrainConfig,
    device: torch.device,
    packed: bool,
) -> tuple[int, bool]:
    """The token budget from this GPU's free memory (the rule of ``worker.spec.budget``,
    which the estimate applies too; an explicit ``micro_batch_tokens`` is kept), and gradient
    checkpointing only when even one packed row of the longest sample (one padded batch)
    would not fit: it recomputes every layer's forward in backward (about half as much work
    again for LoRA, whose backward skips the frozen weights' gradients)."""
    from worker.training.budget import plan_budget  # it imports this module

    rows = longest if packed else autoconfig.settled(config).batch_size * longest
    chosen = plan_budget(lm, config, rows, device)
    return (chosen.tokens if packed else budget), chosen.checkpointing


# Model types whose causal-LM head is a plain ``lm_head(hidden)``: for these the loss is
# computed from the decoder's hidden states (see ``loss``). Others (logit soft-capping or
# scaling, mixtures of experts with auxiliary losses, ...) go through their own forward.
_PLAIN_HEAD_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "olmo", "olmo2"})


def _plain_head(lm: Any) -> bool:
    head = lm.get_output_embeddings()
    return (
        getattr(lm.config, "model_type", None) in _PLAIN_HEAD_TYPES
        and type(head) is torch.nn.Linear
    )


def optimiser_step(
    lm: Any,
    micro: list[MicroBatch],
    answer_tokens: int,
    plan: StepPlan,
    device: torch.device,
    recorded: graphs.PassGraphs | None = None,
) -> tuple[torch.Tensor, int]:
    """Forward and backward over the step's micro-batches. Each one's summed loss is divided
    by the answer tokens of the whole step, so the gradient is that of the mean over every
    answer token of the step however the samples were cut into micro-batches. With
    ``recorded``, the passes replay CUDA graphs (see ``graphs``).

    Returns the step's mean loss as a one-element tensor on the device, not yet read (reading
    it waits for the GPU: the caller queues the rest of the step first), and its tokens."""
    loss_sum = torch.zeros((), device=device)
    if recorded is not None and recorded.off is None:
        for batch in micro:
            loss_sum += recorded.run(lm, batch, answer_tokens, device)
        return loss_sum / answer_tokens, sum(b.tokens for b in micro)
    # All copies queued up front: the host runs ahead of the GPU from here to the step's end.
    for batch in [b.to(device) for b in micro]:
        batch_loss = micro_batch_loss(lm, batch, plan)
        (batch_loss / answer_tokens).backward()
        loss_sum += batch_loss.detach()
    return loss_sum / answer_tokens, sum(b.tokens for b in micro)


def micro_batch_loss(lm: Any, batch: MicroBatch, plan: StepPlan) -> torch.Tensor:
    """Summed cross-entropy over the answer positions of one micro-batch (float32)."""
    inputs: dict[str, Any] = {"input_ids": batch.input_ids, "use_cache": False}
    bounds: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if batch.cu_seq_lens is not None and plan.compiled:
        # Not through the layers' arguments, which a compiled layer would specialise on.
        inputs["position_ids"] = batch.position_ids
        bounds = attention.boundaries(batch.cu_seq_lens, batch.max_length)
    elif batch.cu_seq_lens is not None:
        inputs.update(
            position_ids=batch.position_ids,
            cu_seq_lens_q=batch.cu_seq_lens,
            cu_seq_lens_k=batch.cu_seq_lens,
            max_length_q=batch.max_length,
            max_length_k=batch.max_length,
        )
    else:
        inputs["attention_mask"] = batch.attention_mask
    autocast = (
        torch.autocast(batch.input_ids.device.type, dtype=plan.autocast)
        if plan.autocast is not None
        else contextlib.nullcontext()
    )
    if plan.fused_head:
        with autocast, bounds:
            hidden = lm.get_decoder()(**inputs).last_hidden_state
        picked = hidden.flatten(0, 1).index_select(0, batch.label_positions)
        if plan.autocast is not None:
            picked = picked.to(plan.autocast)  # the head's product in the compute dtype too
        head = lm.get_output_embeddings()
        return linear_cross_entropy_sum(
            picked,
            head.weight,
            batch.label_targets,
            head.bias,
            chunk_elements=plan.loss_chunk_elements,
            row_multiple=plan.loss_row_multiple,
            weights=batch.label_weights,
        )
    with autocast, bounds:
        logits = lm(**inputs).logits
    # P-tuning returns logits for its virtual tokens too, in front of the sample's.
    logits = logits[:, logits.shape[1] - batch.input_ids.shape[1] :]
    picked = logits.flatten(0, 1).index_select(0, batch.label_positions)
    del logits
    rows = max(1, plan.loss_chunk_elements // max(1, picked.shape[-1]))
    total = torch.zeros((), device=picked.device)
    weights = batch.label_weights
    for start in range(0, picked.shape[0], rows):
        losses = F.cross_entropy(
            picked[start : start + rows].float(),
            batch.label_targets[start : start + rows],
            reduction="none",
        )
        if weights is not None:
            losses = losses * weights[start : start + rows]
        total = total + losses.sum()
    return total


def micro_batches(
    group: Sequence[Sequence[Sample]], plan: StepPlan, pad_id: int
) -> list[MicroBatch]:
    """The forward passes of one step whose batches are ``group``."""
    if plan.packed:
        rows = pack([s for b in group for s in b], plan.token_budget)
        if plan.graphs:
            limit = plan.graph_tokens
            return [
                graph_row(row, plan.graph_bound)
                if limit is None or sum(len(s.input_ids) for s in row) <= limit
                else collate_packed(row)
                for row in rows
            ]
        if plan.compiled and compiled.cuda_graphs():
            return [
                collate_packed(row, bucket_length(sum(len(s.input_ids) for s in row)))
                for row in rows
            ]
        if plan.row_multiple:
            step = plan.row_multiple
            return [
                collate_packed(row, -(-sum(len(s.input_ids) for s in row) // step) * step)
                for row in rows
            ]
        return [collate_packed(row) for row in rows]
    return [collate_padded(batch, pad_id) for batch in group]


def validation_sums(
    lm: Any,
    samples: Sequence[Sample],
    plan: StepPlan,
    pad_id: int,
    batch_size: int,
    device: torch.device,
) -> tuple[float, int]:
    """Summed cross-entropy over the answer tokens of ``samples``, in their given order,
    without gradients, and their count: the validation loss is one over the other (summed
    over the processes of a multi-process run first). The caller switches the model to eval
    mode (no dropout) around it. Its passes run as usual, unpadded, even in a graphed run."""
    plan = dataclasses.replace(plan, graphs=False)
    loss_sum, answer_tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(samples), batch_size):
            group = [list(samples[start : start + batch_size])]
            for batch in [b.to(device) for b in micro_batches(group, plan, pad_id)]:
                loss_sum += float(micro_batch_loss(lm, batch, plan))
                answer_tokens += int(batch.label_targets.numel())
    return loss_sum, answer_tokens
