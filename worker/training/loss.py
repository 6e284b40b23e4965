"""The answer-token loss without full-vocabulary fp32 logits.

Only the positions that carry a label go through the output head, a chunk of rows at a time:
each chunk's logits live in fp32 just long enough to give that chunk's cross-entropy and its
gradient, so memory holds at most ``chunk_rows x vocabulary`` logits instead of
``tokens x vocabulary``. The gradient with respect to the hidden states is computed in the
same pass (the loss is a plain sum, so d(loss)/d(hidden) does not depend on anything after
it) and only scaled by the incoming gradient in backward; nothing is recomputed.

With ``kernels.LOSS`` on (the default), one Triton kernel on a GPU
(``kernels.cross_entropy_rows_``) takes a chunk's 16-bit logits to its rows' losses and
overwrites them with their gradient: no float32 copy, two passes over the chunk instead of
about eight; 0.31x the chain's time at Qwen2.5-0.5B's head and 0.62x at Llama-3-8B's (one
H100, 2026-12-07, bench/fused_parts.py).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from worker.training import kernels

# fp32 elements of one chunk's logits (2**27 x 4 bytes = 512 MiB): about 1,000 rows of a
# 128k vocabulary, plenty of work per matrix product and a small share of an 80 GB card.
DEFAULT_CHUNK_ELEMENTS = 2**27


def linear_cross_entropy_sum(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
    row_multiple: int | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sum over rows of cross_entropy(hidden @ weight.T + bias, targets) as a scalar of at
    least float32 precision.

    ``hidden`` is [rows, hidden_size] (only labelled positions), ``weight`` [vocab,
    hidden_size], ``targets`` [rows] (every row labelled). Logits are computed in the
    hidden states' dtype, as the model's own head would, and reduced in float32 (float64
    for float64 inputs).

    ``row_multiple`` (the CPU path) gives every chunk's product a row count that is a
    multiple of it, the last chunk padded with rows that count for nothing: a few matrix
    shapes over a run instead of one per label count (oneDNN keeps kernels per shape).

    ``weights`` [rows] (float32) multiplies each row's cross-entropy and its gradients: 0
    marks rows that only fill a fixed shape (a pass replayed as a CUDA graph, see
    ``packing.graph_row``), 1 real ones.
    """
    real = hidden.shape[0]
    if real == 0:
        return (0.0 * hidden.sum()).to(torch.promote_types(hidden.dtype, torch.float32))
    rows = max(1, chunk_elements // max(1, weight.shape[0]))
    if row_multiple and row_multiple > 1:
        rows = max(row_multiple, rows // row_multiple * row_multiple)
        extra = -real % row_multiple
        if extra:
            hidden = F.pad(hidden, (0, 0, 0, extra))
            targets = F.pad(targets, (0, extra))
            if weights is not None:
                weights = F.pad(weights, (0, extra))
    result: torch.Tensor = _LinearCrossEntropy.apply(
        hidden, weight, bias, targets, rows, real, weights
    )
    return result


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        targets: torch.Tensor,
        rows: int,
        real: int,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        ctx.weight_dtype = weight.dtype
        ctx.bias_dtype = bias.dtype if bias is not None else None
        weight = weight.to(hidden.dtype)
        if bias is not None:
            bias = bias.to(hidden.dtype)
        exact = torch.promote_types(hidden.dtype, torch.float32)
        total = torch.zeros((), dtype=exact, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight = (
            torch.zeros(weight.shape, dtype=exact, device=weight.device) if need_weight else None
        )
        grad_bias = (
            torch.zeros(weight.shape[0], dtype=exact, device=weight.device) if need_bias else None
        )
        grads = grad_hidden is not None or grad_weight is not None or grad_bias is not None
        for start in range(0, hidden.shape[0], rows):
            chunk = hidden[start : start + rows]
            target = targets[start : start + rows]
            valid = min(chunk.shape[0], real - start)  # rows past ``real`` are padding
            scale = None if weights is None else weights[start : start + rows]
            logits = F.linear(chunk, weight, bias)
            if kernels.cross_entropy_kernels(logits):
                # kernels.LOSS on a GPU: one kernel gives the rows' losses and turns the
                # 16-bit logits into their gradient in place; no float32 copy of the chunk.
                total += kernels.cross_entropy_rows_(logits, target, scale, valid, grad=grads).sum()
                if grads:
                    _accumulate(chunk, weight, logits, start, grad_hidden, grad_weight, grad_bias)
                continue
            logits = logits.to(exact)
            log_z = torch.logsumexp(logits, dim=-1)
            picked = logits.gather(1, target.unsqueeze(1)).squeeze(1)
            losses = log_z - picked
            if scale is not None:
                scale = scale.to(exact)
                losses = losses * scale
            total += losses[:valid].sum()
            if not grads:
                continue
            # d(loss)/d(logits) = softmax - one_hot, built in place over the fp32 logits.
            probs = logits.sub_(log_z.unsqueeze(1)).exp_()
            probs[torch.arange(target.shape[0], device=probs.device), target] -= 1.0
            probs[valid:] = 0.0
            if scale is not None:
                probs.mul_(scale.unsqueeze(1))
            grad_logits = probs.to(hidden.dtype)
            del logits, probs
            _accumulate(chunk, weight, grad_logits, start, grad_hidden, grad_weight, grad_bias)
        ctx.save_for_backward(
            *(t if t is not None else torch.empty(0) for t in (grad_hidden, grad_weight, grad_bias))
        )
        return total

    @staticmethod
    def backward(ctx: Any, grad_total: torch.Tensor) -> tuple[Any, ...]:
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        scale = grad_total
        return (
            grad_hidden * scale.to(grad_hidden.dtype) if need_hidden else None,
            (grad_weight * scale).to(ctx.weight_dtype) if need_weight else None,
            (grad_bias * scale).to(ctx.bias_dtype) if need_bias else None,
            None,
            None,
            None,
            None,
        )


def _accumulate(
    chunk: torch.Tensor,
    weight: torch.Tensor,
    grad_logits: torch.Tensor,
    start: int,
    grad_hidden: torch.Tensor | None,
    grad_weight: torch.Tensor | None,
    grad_bias: torch.Tensor | None,
) -> None:
    """Add one chunk's share to the gradients, from the gradient of its logits."""
    if grad_hidden is not None:
        torch.mm(grad_logits, weight, out=grad_hidden[start : start + chunk.shape[0]])
    if grad_weight is not None:
        grad_weight += (grad_logits.t() @ chunk).to(grad_weight.dtype)
    if grad_bias is not None:
        grad_bias += grad_logits.to(grad_bias.dtype).sum(0)
