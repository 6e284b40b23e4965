"""Triton kernels for the elementwise work around the fused layers' matmuls, on a GPU.

A profile of a Llama-3-8B LoRA step on an H100 (``bench/train_throughput.py --profile``,
2026-12-06) spent 53% of the GPU's time outside matrix products, most of it in the chains of
small elementwise kernels that RMSNorm and SwiGLU are in plain PyTorch: each reads and writes
a whole [tokens, width] tensor, in float32 for the norm. Here each chain is one kernel:

- ``rms_norm``: the normalised row times the weight, and the row's ``rstd`` kept for
  backward; ``rms_norm_grad_x``: the input's gradient (the weight's, needed only when the
  norm itself is trained, stays in PyTorch).
- ``silu_mul``: ``silu(gate) * up``; ``silu_mul_grad``: the gradients of gate and up.
- ``pack_mask`` / ``unpack_mask``: boolean masks to a bit an element and back
  (``worker.training.mask_bits``).

Each rounds where the PyTorch chain rounds (to the 16-bit dtype between steps), so the two
agree to the last bit or nearly (tests/worker/test_kernels.py compares them on the GPU).
Without CUDA or Triton, and inside a compiled layer (where inductor fuses the chain itself),
the PyTorch version runs: the same function everywhere.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F

from worker.spec import budget

# False: PyTorch everywhere, the masks of mask_bits included (bench/fused_parts.py compares)
TRITON = True
# Two kernel sets on by default on a GPU since their profiled A/B (2026-12-07, one H100,
# torch 2.11; bench/train_throughput.py --kernels neither --kernels all-mix): 8B LoRA at
# 1.11x the tokens/s (MFU 40.6% to 45.2%) with 4% less peak memory, 0.5B at 1.19-1.27x with
# 18-20% less. (Their first A/B, 2026-12-06, ran slower; that code has changed since.)
# DROPOUT: LoRA dropout drawn inside the LoRA products from a seed, no mask kept (else
# torch.native_dropout and a kept mask). LOSS: the loss head's cross-entropy in one kernel
# (else the float32 PyTorch chain). The memory rules follow DROPOUT through
# worker.spec.budget.DROPOUT_KERNELS (the web's estimate cannot import this module).
DROPOUT = budget.DROPOUT_KERNELS
LOSS = True
# How the dropout kernels draw a keep bit from the seed and an element's position: "philox"
# (``tl.rand``: ten Philox rounds an element) or "mix" (two rounds of a 32-bit integer
# finaliser keyed by the seed: about a sixth of the integer work). Both give
# independent-looking bits at the rate asked (tests/worker/test_kernels.py checks the rate
# and that neighbours do not agree more than chance). bench/fused_parts.py on one H100
# (2026-12-07, 8,192 tokens of an 8B layer): a LoRA linear 0.89x the time of the bit-mask
# path with "mix" against 1.02x with "philox"; the whole MLP 0.94x against 1.11x.
DROPOUT_BITS = "mix"
_BLOCK = 2048  # elements per program of the elementwise kernels


def use_kernels(*tensors: torch.Tensor) -> bool:
    return (
        TRITON
        and all(t.is_cuda and t.is_contiguous() for t in tensors)
        and not torch.compiler.is_compiling()
        and _kernels() is not None
    )


def available() -> bool:
    """Whether Triton is here to build the kernels (a CUDA build of torch brings it)."""
    return _kernels() is not None


def get(name: str) -> Any:
    """One of the kernels (only where ``use_kernels`` said yes)."""
    found = _kernels()
    assert found is not None
    return found[name]


# --- RMSNorm -------------------------------------------------------------------------------


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight * (x * rstd).to(x.dtype)`` with ``rstd = rsqrt(mean(x^2) + eps)`` in float32,
    and ``rstd`` ([..., 1], float32)."""
    width = x.shape[-1]
    if not use_kernels(x, weight) or weight.shape != (width,):
        xf = x.float()
        rstd = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
        return weight * (xf * rstd).to(x.dtype), rstd
    rows = x.numel() // width
    out = torch.empty(x.shape, dtype=torch.promote_types(weight.dtype, x.dtype), device=x.device)
    rstd = torch.empty((*x.shape[:-1], 1), dtype=torch.float32, device=x.device)
    if rows:
        get("rms_forward")[(rows,)](
            x, weight, out, rstd, width, eps, BLOCK=triton_next_power_of_2(width)
        )
    return out, rstd


def rms_norm_grad_x(
    grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, rstd: torch.Tensor
) -> torch.Tensor:
    """The gradient of ``rms_norm`` with respect to ``x``, in ``x``'s dtype."""
    width = x.shape[-1]
    if not use_kernels(grad, x, weight, rstd) or weight.shape != (width,):
        xhat = x.float() * rstd
        g = (grad * weight).float()
        dot = (g * xhat).mean(-1, keepdim=True)
        return g.sub_(xhat.mul_(dot)).mul_(rstd).to(x.dtype)
    rows = x.numel() // width
    grad_x = torch.empty_like(x)
    if rows:
        get("rms_backward")[(rows,)](
            grad, x, weight, rstd, grad_x, width, BLOCK=triton_next_power_of_2(width)
        )
    return grad_x


# --- SwiGLU --------------------------------------------------------------------------------


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """``silu(gate) * up``."""
    if not use_kernels(gate, up) or gate.shape != up.shape or gate.dtype != up.dtype:
        return F.silu(gate) * up
    out = torch.empty_like(gate)
    count = gate.numel()
    if count:
        get("silu_mul")[(triton_cdiv(count, _BLOCK),)](gate, up, out, count, BLOCK=_BLOCK)
    return out


def silu_mul_grad(
    grad: torch.Tensor, gate: torch.Tensor, up: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradients of ``silu_mul`` with respect to gate and up."""
    same = grad.shape == gate.shape == up.shape and grad.dtype == gate.dtype == up.dtype
    if not use_kernels(grad, gate, up) or not same:
        grad_up = grad * F.silu(gate)
        grad_gate = torch.ops.aten.silu_backward(grad * up, gate)
        return grad_gate, grad_up
    grad_gate, grad_up = torch.empty_like(gate), torch.empty_like(up)
    count = gate.numel()
    if count:
        get("silu_mul_grad")[(triton_cdiv(count, _BLOCK),)](
            grad, gate, up, grad_gate, grad_up, count, BLOCK=_BLOCK
        )
    return grad_gate, grad_up


# --- Dropout inside the LoRA products --------------------------------------------------------
#
# (The kernels below take their row counts unspecialised: Triton would otherwise compile a
# variant for counts divisible by 16 and another for the rest, mid-run.)
#
# The fused LoRA linear's dropout, drawn inside the kernels that use it: each element's keep
# bit is a function of a seed and its position (Philox, ``tl.rand``), so backward draws the
# same bits again instead of keeping a mask, and no dropped-out copy of the input is ever
# written. ``torch.native_dropout`` plus its backward read and write each adapted input about
# six times a pass (the input, the copy, the mask, their packing); here forward reads it once
# (``dropout_down``) and backward once for A's gradient (``dropout_grad_a``) and once more to
# add the LoRA term into the input's gradient (``dropout_grad_x_``). The seed is a one-element
# CUDA tensor drawn from torch's generator, so a seeded run repeats and a replayed CUDA graph
# draws new bits.

_LORA_BLOCK_M = 64
# dropout_down's rows per program: 32 ran 74 -> 53 us at 4,096 wide and 242 -> 175 us at
# 14,336 against 64 (8,192 rows, one H100, 2026-12-07), and the same at 896 wide.
_DOWN_BLOCK_M = 32
_LORA_BLOCK_N = 128
_LORA_BLOCK_K = 64
_LORA_SPLIT_ROWS = 512  # rows of one partial sum of A's gradient
_LORA_MAX_RANK = budget.DROPOUT_KERNEL_MAX_RANK


def _mix() -> bool:
    return DROPOUT_BITS == "mix"


def dropout_kernels(x: torch.Tensor, a: torch.Tensor) -> bool:
    """Whether the dropout kernels take a [tokens, in] 16-bit input ``x`` and A [r, in]."""
    return (
        DROPOUT
        and x.dim() == 2
        and x.dtype in (torch.bfloat16, torch.float16)
        and a.dtype == x.dtype
        and a.shape[0] <= _LORA_MAX_RANK
        and a.shape[1] == x.shape[1]
        and x.numel() < 2**31  # positions are the Philox offsets (32 bits)
        and use_kernels(x, a)
    )


def dropout_seed(device: torch.device) -> torch.Tensor:
    """A new seed for one adapted input's keep bits, from torch's CUDA generator."""
    return torch.randint(0, 2**31 - 1, (1,), device=device, dtype=torch.int64)


def _rank_block(rank: int) -> int:
    return max(16, triton_next_power_of_2(rank))


def dropout_down(
    x: torch.Tensor, a: torch.Tensor, p: float, seed: torch.Tensor, scale: float = 1.0
) -> torch.Tensor:
    """``scale * dropout(x) @ a.T`` (kept elements scaled by 1 / (1 - p)), in x's dtype, with
    the keep bits given by ``seed``."""
    rows, width = x.shape
    rank = a.shape[0]
    out = torch.empty(rows, rank, dtype=x.dtype, device=x.device)
    if rows:
        get("dropout_down")[(triton_cdiv(rows, _DOWN_BLOCK_M),)](
            x, a, out, seed, rows, width, rank, p, scale / (1.0 - p),
            BLOCK_M=_DOWN_BLOCK_M, BLOCK_K=_LORA_BLOCK_K, BLOCK_R=_rank_block(rank), MIX=_mix(),
        )  # fmt: skip
    return out


def dropout_grad_x_(
    grad_x: torch.Tensor,
    g_b: torch.Tensor,
    a: torch.Tensor,
    p: float,
    seed: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """``grad_x += scale * keep * (g_b @ a)`` in place, ``keep`` the bits of ``seed``."""
    rows, width = grad_x.shape
    rank = a.shape[0]
    if rows:
        grid = (triton_cdiv(rows, _LORA_BLOCK_M), triton_cdiv(width, _LORA_BLOCK_N))
        get("dropout_grad_x")[grid](
            grad_x, g_b, a, seed, rows, width, rank, p, scale,
            BLOCK_M=_LORA_BLOCK_M, BLOCK_N=_LORA_BLOCK_N, BLOCK_R=_rank_block(rank), MIX=_mix(),
        )  # fmt: skip
    return grad_x


def dropout_grad_a(
    g_b: torch.Tensor, x: torch.Tensor, p: float, seed: torch.Tensor, scale: float = 1.0
) -> torch.Tensor:
    """``scale * g_b.T @ (keep * x)`` in float32 ([r, in]), ``keep`` the bits of ``seed``.
    Partial sums over row blocks are added in a fixed order (deterministic)."""
    rows, width = x.shape
    rank = g_b.shape[1]
    splits = max(1, triton_cdiv(rows, _LORA_SPLIT_ROWS))
    partial = torch.empty(splits, rank, width, dtype=torch.float32, device=x.device)
    if rows:
        grid = (triton_cdiv(width, _LORA_BLOCK_N), splits)
        get("dropout_grad_a")[grid](
            g_b, x, partial, seed, rows, width, rank, p, scale, _LORA_SPLIT_ROWS,
            BLOCK_M=_LORA_BLOCK_M, BLOCK_N=_LORA_BLOCK_N, BLOCK_R=_rank_block(rank), MIX=_mix(),
        )  # fmt: skip
    else:
        partial.zero_()
    return partial.sum(0) if splits > 1 else partial[0]


def dropout_keep(rows: int, width: int, p: float, seed: torch.Tensor) -> torch.Tensor:
    """The boolean keep mask the kernels above draw for ``seed`` (tests compare with it)."""
    keep = torch.empty(rows, width, dtype=torch.uint8, device=seed.device)
    count = rows * width
    if count:
        get("dropout_keep")[(triton_cdiv(count, _BLOCK),)](
            keep, seed, count, p, BLOCK=_BLOCK, MIX=_mix()
        )
    return keep.bool()


# --- The loss head's cross-entropy -----------------------------------------------------------

_VOCAB_BLOCK = 4096
_VOCAB_WARPS = 8


def cross_entropy_kernels(logits: torch.Tensor) -> bool:
    """Whether ``cross_entropy_rows_`` takes these [rows, vocabulary] logits."""
    return (
        LOSS
        and logits.dim() == 2
        and logits.dtype in (torch.bfloat16, torch.float16, torch.float32)
        and use_kernels(logits)
    )


def cross_entropy_rows_(
    logits: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor | None,
    valid: int,
    *,
    grad: bool,
) -> torch.Tensor:
    """Each row's cross-entropy in float32, times its weight (rows from ``valid`` on weigh 0);
    with ``grad``, the logits are overwritten by the loss's gradient with respect to them,
    ``(softmax - one_hot) * weight``, in their dtype.

    The chain it stands for (``worker.training.loss``) casts the chunk to float32 and passes
    over it about eight times; here one pass finds each row's log-sum-exp (a running maximum
    and sum) and a second writes the gradient in place."""
    rows, vocab = logits.shape
    losses = torch.empty(rows, dtype=torch.float32, device=logits.device)
    if rows:
        get("cross_entropy_rows")[(rows,)](
            logits, targets, weights if weights is not None else losses, losses, vocab, valid,
            HAS_WEIGHTS=weights is not None, GRAD=grad, BLOCK=_VOCAB_BLOCK, num_warps=_VOCAB_WARPS,
        )  # fmt: skip
    return losses


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


def triton_next_power_of_2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


@functools.cache
def _kernels() -> dict[str, Any] | None:
    """The Triton kernels, or None where Triton is not installed."""
    try:
        import triton
        import triton.language as tl
    except ImportError:
        return None

    # Triton reads the kernels' annotations itself: only its own types may appear there.
    @triton.jit  # type: ignore[misc,unused-ignore]
    def rms_forward(x_ptr, w_ptr, out_ptr, rstd_ptr, width, eps, BLOCK: tl.constexpr):  # type: ignore[no-untyped-def,unused-ignore]
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        valid = cols < width
        x = tl.load(x_ptr + row * width + cols, mask=valid, other=0.0)
        xf = x.to(tl.float32)
        rstd = 1.0 / tl.sqrt(tl.sum(xf * xf, axis=0) / width + eps)
        normed = (xf * rstd).to(x.dtype)
        w = tl.load(w_ptr + cols, mask=valid, other=0.0)
        out = w.to(tl.float32) * normed.to(tl.float32)
        tl.store(out_ptr + row * width + cols, out.to(out_ptr.dtype.element_ty), mask=valid)
        tl.store(rstd_ptr + row, rstd)

    @triton.jit  # type: ignore[misc,unused-ignore]
    def rms_backward(g_ptr, x_ptr, w_ptr, rstd_ptr, out_ptr, width, BLOCK: tl.constexpr):  # type: ignore[no-untyped-def,unused-ignore]
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        valid = cols < width
        x = tl.load(x_ptr + row * width + cols, mask=valid, other=0.0).to(tl.float32)
        grad = tl.load(g_ptr + row * width + cols, mask=valid, other=0.0)
        w = tl.load(w_ptr + cols, mask=valid, other=0.0)
        rstd = tl.load(rstd_ptr + row)
        xhat = x * rstd
        # (grad * weight) in their promoted dtype, as the PyTorch chain rounds it.
        g = (grad.to(tl.float32) * w.to(tl.float32)).to(g_ptr.dtype.element_ty).to(tl.float32)
        dot = tl.sum(g * xhat, axis=0) / width
        grad_x = (g - xhat * dot) * rstd
        tl.store(out_ptr + row * width + cols, grad_x.to(out_ptr.dtype.element_ty), mask=valid)

    @triton.jit  # type: ignore[misc,unused-ignore]
    def silu_mul(gate_ptr, up_ptr, out_ptr, count, BLOCK: tl.constexpr):  # type: ignore[no-untyped-def,unused-ignore]
        offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        valid = offsets < count
        gate = tl.load(gate_ptr + offsets, mask=valid, other=0.0)
        up = tl.load(up_ptr + offsets, mask=valid, other=0.0)
        gf = gate.to(tl.float32)
        silu = (gf / (1.0 + tl.exp(-gf))).to(gate.dtype)
        out = silu.to(tl.float32) * up.to(tl.float32)
        tl.store(out_ptr + offsets, out.to(gate.dtype), mask=valid)

    @triton.jit  # type: ignore[misc,unused-ignore]
    def silu_mul_grad(
        g_ptr, gate_ptr, up_ptr, grad_gate_ptr, grad_up_ptr, count, BLOCK: tl.constexpr
    ):  # type: ignore[no-untyped-def,unused-ignore]
        offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        valid = offsets < count
        grad = tl.load(g_ptr + offsets, mask=valid, other=0.0)
        gate = tl.load(gate_ptr + offsets, mask=valid, other=0.0)
        up = tl.load(up_ptr + offsets, mask=valid, other=0.0)
        gf = gate.to(tl.float32)
        sig = 1.0 / (1.0 + tl.exp(-gf))
        silu = (gf * sig).to(gate.dtype)
        grad_up = grad.to(tl.float32) * silu.to(tl.float32)
        t = (grad.to(tl.float32) * up.to(tl.float32)).to(gate.dtype).to(tl.float32)
        grad_gate = t * sig * (1.0 + gf * (1.0 - sig))
        tl.store(grad_up_ptr + offsets, grad_up.to(gate.dtype), mask=valid)
        tl.store(grad_gate_ptr + offsets, grad_gate.to(gate.dtype), mask=valid)

    @triton.jit  # type: ignore[misc,unused-ignore]
    def pack_mask(mask_ptr, out_ptr, count, BLOCK: tl.constexpr):  # type: ignore[no-untyped-def,unused-ignore]
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        valid = offsets < count
        lanes = tl.arange(0, 8)
        bits = tl.load(
            mask_ptr + offsets[:, None] * 8 + lanes[None, :], mask=valid[:, None], other=0
        ).to(tl.int32)
        byte = tl.sum(bits << lanes[None, :], axis=1)
        tl.store(out_ptr + offsets, byte.to(tl.uint8), mask=valid)

    @triton.jit  # type: ignore[misc,unused-ignore]
    def unpack_mask(packed_ptr, out_ptr, count, BLOCK: tl.constexpr):  # type: ignore[no-untyped-def,unused-ignore]
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        valid = offsets < count
        lanes = tl.arange(0, 8)
        byte = tl.load(packed_ptr + offsets, mask=valid, other=0).to(tl.int32)
        bits = (byte[:, None] >> lanes[None, :]) & 1
        tl.store(
            out_ptr + offsets[:, None] * 8 + lanes[None, :],
            bits.to(tl.uint8),
            mask=valid[:, None],
        )

    @triton.jit  # type: ignore[misc,unused-ignore]
    def finalise(h):  # type: ignore[no-untyped-def,unused-ignore]
        # A 32-bit integer finaliser (xor-shift, multiply; a bijection that spreads each
        # input bit over the whole word).
        h ^= h >> 16
        h *= 0x7FEB352D
        h ^= h >> 15
        h *= 0x846CA68B
        h ^= h >> 16
        return h

    @triton.jit  # type: ignore[misc,unused-ignore]
    def kept(seed, offsets, p, MIX: tl.constexpr):  # type: ignore[no-untyped-def,unused-ignore]
        # Whether each position's element is kept: a uniform draw in [0, 1) against p.
        if MIX:
            # The position xor one key, finalised; xor a second key drawn from the first,
            # finalised again (one key alone would make two seeds' bits shifted copies).
            key = ((seed ^ (seed >> 32)) & 0xFFFFFFFF).to(tl.uint32)
            second = finalise(key ^ 0x9E3779B9)
            h = finalise(finalise(offsets.to(tl.uint32) ^ key) ^ second)
            u = (h >> 8).to(tl.float32) * 5.9604644775390625e-08  # 24 bits over 2**24
        else:
            u = tl.rand(seed, offsets.to(tl.uint32))
        return u >= p

    @triton.jit  # type: ignore[misc,unused-ignore]
    def dropped_tile(x_ptr, seed, rm, rk, rows, width, p, MIX: tl.constexpr):  # type: ignore[no-untyped-def,unused-ignore]
        # x[rm, rk] with the dropped elements (and those outside x) zero, unscaled.
        offsets = rm[:, None] * width + rk[None, :]
        x = tl.load(x_ptr + offsets, mask=(rm[:, None] < rows) & (rk[None, :] < width), other=0.0)
        return tl.where(kept(seed, offsets, p, MIX), x, tl.zeros_like(x))

    @triton.jit(do_not_specialize=["rows"])  # type: ignore[misc,unused-ignore]
    def dropout_down(
        x_ptr, a_ptr, out_ptr, seed_ptr, rows, width, rank, p, scale,
        BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr, MIX: tl.constexpr,
    ):  # type: ignore[no-untyped-def,unused-ignore]  # fmt: skip
        rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        rr = tl.arange(0, BLOCK_R)
        seed = tl.load(seed_ptr)
        acc = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
        for k0 in range(0, width, BLOCK_K):
            rk = k0 + tl.arange(0, BLOCK_K)
            x = dropped_tile(x_ptr, seed, rm, rk, rows, width, p, MIX)
            a_t = tl.load(
                a_ptr + rr[None, :] * width + rk[:, None],
                mask=(rr[None, :] < rank) & (rk[:, None] < width),
                other=0.0,
            )
            acc += tl.dot(x, a_t)
        out = (acc * scale).to(out_ptr.dtype.element_ty)
        tl.store(
            out_ptr + rm[:, None] * rank + rr[None, :],
            out,
            mask=(rm[:, None] < rows) & (rr[None, :] < rank),
        )

    @triton.jit(do_not_specialize=["rows"])  # type: ignore[misc,unused-ignore]
    def dropout_grad_x(
        gx_ptr, gb_ptr, a_ptr, seed_ptr, rows, width, rank, p, scale,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr, MIX: tl.constexpr,
    ):  # type: ignore[no-untyped-def,unused-ignore]  # fmt: skip
        rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        rr = tl.arange(0, BLOCK_R)
        seed = tl.load(seed_ptr)
        gb = tl.load(
            gb_ptr + rm[:, None] * rank + rr[None, :],
            mask=(rm[:, None] < rows) & (rr[None, :] < rank),
            other=0.0,
        )
        a = tl.load(
            a_ptr + rr[:, None] * width + rn[None, :],
            mask=(rr[:, None] < rank) & (rn[None, :] < width),
            other=0.0,
        )
        lora = tl.dot(gb, a)
        inside = (rm[:, None] < rows) & (rn[None, :] < width)
        offsets = rm[:, None] * width + rn[None, :]
        keep = kept(seed, offsets, p, MIX)
        gx = tl.load(gx_ptr + offsets, mask=inside, other=0.0).to(tl.float32)
        gx += tl.where(keep, lora * scale, 0.0)
        tl.store(gx_ptr + offsets, gx.to(gx_ptr.dtype.element_ty), mask=inside)

    @triton.jit(do_not_specialize=["rows"])  # type: ignore[misc,unused-ignore]
    def dropout_grad_a(
        gb_ptr, x_ptr, out_ptr, seed_ptr, rows, width, rank, p, scale, split_rows,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr, MIX: tl.constexpr,
    ):  # type: ignore[no-untyped-def,unused-ignore]  # fmt: skip
        rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        split = tl.program_id(1)
        rr = tl.arange(0, BLOCK_R)
        seed = tl.load(seed_ptr)
        start = split * split_rows
        end = tl.minimum(start + split_rows, rows)
        acc = tl.zeros((BLOCK_R, BLOCK_N), dtype=tl.float32)
        for m0 in range(start, end, BLOCK_M):
            rm = m0 + tl.arange(0, BLOCK_M)
            gb_t = tl.load(
                gb_ptr + rm[None, :] * rank + rr[:, None],
                mask=(rm[None, :] < end) & (rr[:, None] < rank),
                other=0.0,
            )
            x = dropped_tile(x_ptr, seed, rm, rn, end, width, p, MIX)
            acc += tl.dot(gb_t, x)
        tl.store(
            out_ptr + split * rank * width + rr[:, None] * width + rn[None, :],
            acc * scale,
            mask=(rr[:, None] < rank) & (rn[None, :] < width),
        )

    @triton.jit(do_not_specialize=["count"])  # type: ignore[misc,unused-ignore]
    def dropout_keep(keep_ptr, seed_ptr, count, p, BLOCK: tl.constexpr, MIX: tl.constexpr):  # type: ignore[no-untyped-def,unused-ignore]
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        seed = tl.load(seed_ptr)
        keep = kept(seed, offsets, p, MIX)
        tl.store(keep_ptr + offsets, keep.to(tl.uint8), mask=offsets < count)

    @triton.jit(do_not_specialize=["valid"])  # type: ignore[misc,unused-ignore]
    def cross_entropy_rows(
        logits_ptr, targets_ptr, weights_ptr, losses_ptr, vocab, valid,
        HAS_WEIGHTS: tl.constexpr, GRAD: tl.constexpr, BLOCK: tl.constexpr,
    ):  # type: ignore[no-untyped-def,unused-ignore]  # fmt: skip
        row = tl.program_id(0).to(tl.int64)
        base = logits_ptr + row * vocab
        cols = tl.arange(0, BLOCK)
        # A running maximum and sum of exponentials per lane; lanes past the vocabulary read a
        # finite floor whose terms vanish once the lanes are combined.
        running_max = tl.full((BLOCK,), -1e30, dtype=tl.float32)
        running_sum = tl.zeros((BLOCK,), dtype=tl.float32)
        for v0 in range(0, vocab, BLOCK):
            idx = v0 + cols
            x = tl.load(base + idx, mask=idx < vocab, other=-1e30).to(tl.float32)
            new_max = tl.maximum(running_max, x)
            running_sum = running_sum * tl.exp(running_max - new_max) + tl.exp(x - new_max)
            running_max = new_max
        top = tl.max(running_max, axis=0)
        lse = top + tl.log(tl.sum(running_sum * tl.exp(running_max - top), axis=0))
        target = tl.load(targets_ptr + row)
        picked = tl.load(base + target).to(tl.float32)
        weight = 1.0
        if HAS_WEIGHTS:
            weight = tl.load(weights_ptr + row).to(tl.float32)
        weight = tl.where(row < valid, weight, 0.0)
        tl.store(losses_ptr + row, (lse - picked) * weight)
        if GRAD:
            for v0 in range(0, vocab, BLOCK):
                idx = v0 + cols
                inside = idx < vocab
                x = tl.load(base + idx, mask=inside, other=0.0).to(tl.float32)
                g = tl.exp(x - lse)
                g = tl.where(idx == target, g - 1.0, g) * weight
                tl.store(base + idx, g.to(logits_ptr.dtype.element_ty), mask=inside)

    return {
        "pack_mask": pack_mask,
        "unpack_mask": unpack_mask,
        "rms_forward": rms_forward,
        "rms_backward": rms_backward,
        "silu_mul": silu_mul,
        "silu_mul_grad": silu_mul_grad,
        "dropout_down": dropout_down,
        "dropout_grad_x": dropout_grad_x,
        "dropout_grad_a": dropout_grad_a,
        "dropout_keep": dropout_keep,
        "cross_entropy_rows": cross_entropy_rows,
    }
