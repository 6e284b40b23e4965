"""Attention over packed rows: several samples laid end to end in one row, each attending only
to itself.

Registered with transformers' AttentionInterface as ``tunelab_packed``. transformers builds no
mask for an implementation it has no mask function for, so the model passes ``attention_mask``
as None and the sample boundaries reach us as ``cu_seq_lens_q`` (cumulative lengths, int32)
and ``max_length_q`` keyword arguments, which the decoder forwards to every attention call.
Positions restart at 0 for each sample (``position_ids``), so rotary embeddings see each
sample as if it were alone.

On a CUDA GPU in bf16/fp16 this calls PyTorch's own variable-length FlashAttention kernels
(``aten::_flash_attention_forward``), which skip the cross-sample blocks entirely: no padding,
no mask in memory. Elsewhere (CPU, float32) each sample runs through SDPA on its own.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from worker.spec.errors import TrainingError

ATTENTION_NAME = "tunelab_packed"

# On a CPU each sample's attention runs padded to a multiple of this many tokens (see
# ``_per_sample_sdpa``): PyTorch's CPU flash kernel cuts queries into blocks of 32 or 64.
CPU_ATTENTION_MULTIPLE = 64

_registered = False

# Sample boundaries of the pass in flight when a compiled decoder runs it (see ``boundaries``).
_current: tuple[torch.Tensor, int] | None = None


def register() -> None:
    """Make ``tunelab_packed`` a valid ``attn_implementation`` (idempotent)."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, packed_attention_forward)
    _registered = True


def unsupported_reason(model: Any) -> str | None:
    """Why ``model`` cannot train on packed rows, or None when it can.

    Packing needs every layer to use plain causal attention: a sliding window, logit
    soft-capping or a model that does not dispatch through AttentionInterface would need
    more than sample boundaries.
    """
    config = getattr(model, "config", None)
    if config is None:
        return "the model has no config"
    if getattr(model, "_supports_attention_backend", False) is not True:
        return f"{type(model).__name__} does not use transformers' attention interface"
    layer_types = getattr(config, "layer_types", None) or []
    if any(kind != "full_attention" for kind in layer_types):
        return "some layers use sliding-window attention"
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return "the model uses sliding-window attention"
    if getattr(config, "attn_logit_softcapping", None):
        return "the model soft-caps its attention logits"
    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder models are not packed"
    return None


@contextlib.contextmanager
def boundaries(cu_seq_lens: torch.Tensor, max_length: int) -> Iterator[None]:
    """Hand one pass's sample boundaries to the attention calls inside the block without
    passing them through the decoder layers' arguments. A compiled layer (see ``compiled``)
    would otherwise take their length and the longest sample as part of its shape and
    compile again for nearly every pass."""
    global _current
    previous, _current = _current, (cu_seq_lens, max_length)
    try:
        yield
    finally:
        _current = previous


@contextlib.contextmanager
def packed_attention(model: Any) -> Iterator[None]:
    """Switch ``model`` (a transformers PreTrainedModel) to packed attention for the block."""
    register()
    previous = model.config._attn_implementation
    model.set_attn_implementation(ATTENTION_NAME)
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


# Compiled decoder layers stop here and call this eagerly: the boundaries differ from pass
# to pass, and FlashAttention is one kernel that compiling would not improve.
@torch.compiler.disable
def packed_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Causal attention within each packed sample; query/key/value are [1, heads, T, dim].

    Returns [1, T, heads, dim], the layout transformers' attention functions return.
    """
    cu_seq_lens = kwargs.get("cu_seq_lens_q")
    max_length = kwargs.get("max_length_q")
    if cu_seq_lens is None and _current is not None:
        cu_seq_lens, max_length = _current
    if cu_seq_lens is None or max_length is None:
        raise TrainingError(
            "Packed attention was called without sample boundaries (cu_seq_lens_q)."
        )
    if query.shape[0] != 1:
        raise TrainingError("Packed attention expects one packed row per forward pass.")
    if kwargs.get("sliding_window") is not None or kwargs.get("softcap") is not None:
        raise TrainingError("Packed attention does not support sliding windows or soft-capping.")
    if attention_mask is not None:
        raise TrainingError(
            "Packed attention expects no attention mask; boundaries come from cu_seq_lens_q."
        )
    # [1, H, T, D] -> [T, H, D]; after rotary embeddings this is usually already contiguous.
    q = query[0].transpose(0, 1)
    k = key[0].transpose(0, 1)
    v = value[0].transpose(0, 1)
    if torch.is_autocast_enabled(q.device.type):
        # Full fine-tuning's float32 residual stream turns the rotated query and key back
        # into float32 under autocast; the kernels want all three in the compute dtype.
        compute = torch.get_autocast_dtype(q.device.type)
        q, k, v = q.to(compute), k.to(compute), v.to(compute)
    if _flash_usable(q, k, v):
        out = _VarlenFlash.apply(
            q.contiguous(),
            k.contiguous(),
            v.contiguous(),
            cu_seq_lens.to(device=q.device, dtype=torch.int32),
            int(max_length),
            float(dropout),
            scaling,
        )
    else:
        out = _per_sample_sdpa(q, k, v, cu_seq_lens, dropout, scaling)
    return out.unsqueeze(0), None


def _flash_usable(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    if not q.is_cuda or q.dtype not in (torch.bfloat16, torch.float16):
        return False
    head_dim = q.shape[-1]
    if head_dim > 256 or head_dim % 8 or v.shape[-1] != head_dim:
        return False
    if q.shape[1] % k.shape[1]:
        return False
    major, _ = torch.cuda.get_device_capability(q.device)
    return major >= 8


class _VarlenFlash(torch.autograd.Function):
    """FlashAttention-2 over cumulative sequence lengths (PyTorch's bundled kernels).

    The aten ops handle grouped-query attention (fewer key/value heads) natively.
    """

    @staticmethod
    def forward(
        ctx: Any,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        cu_seq_lens: torch.Tensor,
        max_length: int,
        dropout: float,
        scale: float | None,
    ) -> torch.Tensor:
        out, lse, rng_state, unused, _ = torch.ops.aten._flash_attention_forward(
            q,
            k,
            v,
            cu_seq_lens,
            cu_seq_lens,
            max_length,
            max_length,
            dropout,
            True,  # causal
            False,  # no debug mask
            scale=scale,
        )
        ctx.save_for_backward(q, k, v, out, lse, cu_seq_lens, rng_state, unused)
        ctx.max_length, ctx.dropout, ctx.scale = max_length, dropout, scale
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        q, k, v, out, lse, cu_seq_lens, rng_state, unused = ctx.saved_tensors
        dq, dk, dv = torch.ops.aten._flash_attention_backward(
            grad_out.contiguous(),
            q,
            k,
            v,
            out,
            lse,
            cu_seq_lens,
            cu_seq_lens,
            ctx.max_length,
            ctx.max_length,
            ctx.dropout,
            True,
            rng_state,
            unused,
            scale=ctx.scale,
        )
        return dq, dk, dv, None, None, None, None


def _per_sample_sdpa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seq_lens: torch.Tensor,
    dropout: float,
    scale: float | None,
) -> torch.Tensor:
    groups = q.shape[1] // k.shape[1]
    if groups > 1:
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
    bounds = [int(b) for b in cu_seq_lens.tolist()]
    on_cpu = q.device.type == "cpu"
    outputs = []
    for start, end in itertools.pairwise(bounds):
        # [L, H, D] -> [1, H, L, D] for SDPA, and back. Four dimensions, not three: only
        # then does a CPU take PyTorch's flash kernel rather than the matrix-product path
        # with its materialised mask (1.5x faster forward and backward at 256 tokens, 2.2x
        # at 512, on one core in bf16).
        parts = [t[start:end].transpose(0, 1).unsqueeze(0) for t in (q, k, v)]
        length = end - start
        padded = -(-length // CPU_ATTENTION_MULTIPLE) * CPU_ATTENTION_MULTIPLE
        if on_cpu and padded != length:
            # A CPU's kernel keeps a compiled matrix product for every block shape it meets
            # (oneDNN's primitive cache, about a megabyte each with AMX), and a sample's
            # length sets the shape of its last blocks: every new length cost memory until
            # the cache's 1,024 entries were full. Zeros after the sample are exact under
            # the causal mask (no real position sees them) and their outputs are dropped.
            parts = [F.pad(t, (0, 0, 0, padded - length)) for t in parts]
        part = F.scaled_dot_product_attention(
            parts[0], parts[1], parts[2], dropout_p=dropout, is_causal=True, scale=scale
        )
        outputs.append(part[0, :, :length].transpose(0, 1))
    return torch.cat(outputs, dim=0)
