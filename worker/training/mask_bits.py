"""Boolean masks kept eight elements to a byte: element k of each eight at bit k.

The fused LoRA functions (``worker.training.fused``) keep the dropout keep mask of a wide
input for backward; a bit an element instead of a byte saves 34 KB a token at a Llama-3-8B
layer. On a GPU one Triton kernel packs (reads the mask once, writes an eighth of it) and one
unpacks; torch's elementwise operations, which need four passes each over the mask, cost 7%
of a Llama-3-8B MLP's forward and backward where the kernels cost under 1%
(``bench/fused_parts.py``). On a CPU, or without Triton, the same layout comes from those
elementwise operations: eight mask bytes read as one 64-bit integer; multiplying it by
``_GATHER`` moves byte k's low bit to bit 56 + k with no carries. Unpacking repeats a packed
byte in all eight bytes of an integer (``_SPREAD``) and keeps bit k in byte k (``_SELECT``).
Inside a compiled layer the elementwise version is used, which inductor fuses by itself. The
kernels live with the others in ``worker.training.kernels`` (one switch, one registry).
"""

from __future__ import annotations

import torch

from worker.training import kernels
from worker.training.kernels import triton_cdiv

_GATHER = 0x0102040810204080
_SPREAD = 0x0101010101010101
_SELECT = 0x8040201008040201 - 2**64  # as a signed 64-bit integer
_BLOCK = 1024  # packed bytes per Triton program


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """A boolean [rows, width] mask (width a multiple of 8) as [rows, width / 8] bytes."""
    rows, width = mask.shape
    if width % 8:
        raise ValueError(f"a mask {width} wide does not pack into whole bytes")
    mask = mask.contiguous()
    if kernels.use_kernels(mask):
        packed = torch.empty(rows, width // 8, dtype=torch.uint8, device=mask.device)
        count = packed.numel()
        if count:
            grid = (triton_cdiv(count, _BLOCK),)
            kernels.get("pack_mask")[grid](mask.view(torch.uint8), packed, count, BLOCK=_BLOCK)
        return packed
    words = mask.view(torch.uint8).view(torch.int64)  # [rows, width / 8]
    return words.mul(_GATHER).bitwise_right_shift_(56).bitwise_and_(255).to(torch.uint8)


def unpack_mask(packed: torch.Tensor) -> torch.Tensor:
    """The boolean mask ``pack_mask`` packed."""
    rows, width = packed.shape
    packed = packed.contiguous()
    if kernels.use_kernels(packed):
        out = torch.empty(rows, width * 8, dtype=torch.uint8, device=packed.device)
        count = packed.numel()
        if count:
            grid = (triton_cdiv(count, _BLOCK),)
            kernels.get("unpack_mask")[grid](packed, out, count, BLOCK=_BLOCK)
        return out.view(torch.bool)
    # Byte k of each word now holds bit k of the packed byte (0 or 2^k).
    words = packed.to(torch.int64).mul_(_SPREAD).bitwise_and_(_SELECT)
    spread = words.view(torch.uint8).view(rows, width * 8)
    if torch.compiler.is_compiling():
        return spread.ne(0)  # inductor fuses it (its CPU code cannot view bytes as bool)
    # Clamped to 0/1 the bytes are a valid bool: torch's eager CPU comparisons into bool
    # (``ne(0)``) cost 7x this integer clamp.
    return spread.clamp_(max=1).view(torch.bool)
