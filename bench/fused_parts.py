"""Time and memory of the fused layers' parts at a real layer's size, before and after a change.

Runs one Llama-3-8B layer's LoRA projections (hidden 4,096, intermediate 14,336, r 16,
dropout 0.05) over a pass of ``--tokens`` tokens, forward and backward, in each of these ways,
in one process on one GPU:

- ``lora``: a q-sized LoRA linear, its dropout keep mask kept a byte an element (``bytes``)
  or a bit (``bits``, ``worker.training.mask_bits``: its Triton kernels; ``bits-torch``: its
  elementwise version, with ``worker.training.kernels.TRITON`` off).
- ``rms_norm`` and ``swiglu`` (on gate and up outputs): PyTorch's chains of elementwise
  kernels (``pytorch``) against ``worker.training.kernels``' Triton kernels (``triton``).
- ``mlp``: gate, up, SwiGLU and down: ``before`` runs the SwiGLU and the down projection as
  two functions (the down projection keeps its input, masks a byte an element), ``recompute``
  as one that recomputes the down projection's input in backward, ``after`` that plus masks
  packed and the Triton kernels (the engine's path).
- ``seeded-philox`` / ``seeded-mix`` (``lora``, ``mlp``, ``lora-small``): the dropout kernels
  (``kernels.DROPOUT``, on by default), no mask kept, the keep bits drawn by Philox or by
  the integer finaliser (``kernels.DROPOUT_BITS``).
- ``lora-small``: a q-sized LoRA linear of Qwen2.5-0.5B (896 wide) over ``--small-tokens``.
- ``loss-small`` / ``loss-8b``: the loss head of Qwen2.5-0.5B (896 wide, 151,936 tokens in
  the vocabulary; ``--small-tokens`` labelled rows) and of Llama-3-8B (4,096, 128,256;
  ``--tokens`` rows), its weight frozen: the float32 chain (``chain``) against the
  cross-entropy kernel (``kernels.LOSS``, on by default) at a few block sizes and warps.

Prints one JSON line per part: median milliseconds per forward + backward, the bytes kept for
backward per token, and each way's time and memory over the first way's.

    python bench/fused_parts.py [--tokens 8192] [--small-tokens 32768] [--parts lora,loss-small]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worker.training import fused, kernels, loss

HIDDEN, INTERMEDIATE, RANK, DROPOUT, SCALING = 4096, 14336, 16, 0.05, 2.0


def adapter(inputs: int, outputs: int, device: torch.device) -> tuple[Any, ...]:
    weight = torch.randn(outputs, inputs, device=device, dtype=torch.bfloat16) * 0.02
    a = (torch.randn(RANK, inputs, device=device) * 0.02).requires_grad_(True)
    b = (torch.randn(outputs, RANK, device=device) * 0.02).requires_grad_(True)
    return (weight, None, a, b, SCALING, DROPOUT, None)


def measure(run: Callable[[], torch.Tensor], tokens: int, repeats: int) -> dict[str, Any]:
    times = []
    kept = 0
    for i in range(repeats + 3):
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = run()
        torch.cuda.synchronize()
        kept = torch.cuda.memory_allocated() - before - out.numel() * out.element_size()
        out.backward(torch.ones_like(out))
        del out
        end.record()
        torch.cuda.synchronize()
        if i >= 3:
            times.append(start.elapsed_time(end))
    result: dict[str, float | None] = {"ms": round(statistics.median(times), 3)}
    result["kept_bytes_per_token"] = round(kept / tokens)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--small-tokens", type=int, default=32768)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--parts", default="", help="comma-separated parts (default: all)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("This benchmark needs a CUDA GPU.")
    device = torch.device("cuda")
    torch.manual_seed(0)
    tokens = args.tokens
    x = torch.randn(tokens, HIDDEN, device=device, dtype=torch.bfloat16).requires_grad_(True)
    q = adapter(HIDDEN, HIDDEN, device)
    gate, up = adapter(HIDDEN, INTERMEDIATE, device), adapter(HIDDEN, INTERMEDIATE, device)
    down = adapter(INTERMEDIATE, HIDDEN, device)
    packing = fused.PACK_MASK_MIN_WIDTH

    small = args.small_tokens
    x_small = torch.randn(small, 896, device=device, dtype=torch.bfloat16).requires_grad_(True)
    q_small = adapter(896, 896, device)

    def seeded(way: str) -> None:
        """The dropout kernels on for a ``seeded-*`` way, off otherwise."""
        kernels.DROPOUT = way.startswith("seeded")
        kernels.DROPOUT_BITS = way.removeprefix("seeded-") if kernels.DROPOUT else "philox"

    def lora(
        pack: bool, triton: bool = True, way: str = "", inputs: torch.Tensor = x, q: Any = q
    ) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            # The settings hold until the next way's run sets them: through its backward.
            fused.PACK_MASK_MIN_WIDTH = packing if pack else 1 << 30
            kernels.TRITON = triton
            seeded(way)
            out: torch.Tensor = fused._LoraLinear.apply(inputs, *q)
            return out

        return run

    def mlp(way: str) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            plain = way in ("before", "recompute")  # byte masks, PyTorch's chains
            fused.PACK_MASK_MIN_WIDTH = 1 << 30 if plain else packing
            kernels.TRITON = not plain
            seeded(way)
            g = fused._LoraLinear.apply(x, *gate)
            u = fused._LoraLinear.apply(x, *up)
            if way == "before":
                hidden = fused._SiluMul.apply(g, u)
                out: torch.Tensor = fused._LoraLinear.apply(hidden, *down)
            else:
                out = fused._SwiGLULora.apply(g, u, *down)
            return out

        return run

    norm_weight = torch.randn(HIDDEN, device=device, dtype=torch.bfloat16)
    gate_out = torch.randn(tokens, INTERMEDIATE, device=device, dtype=torch.bfloat16)
    up_out = torch.randn(tokens, INTERMEDIATE, device=device, dtype=torch.bfloat16)
    gate_out.requires_grad_(True)
    up_out.requires_grad_(True)

    def elementwise(part: str, triton: bool) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            kernels.TRITON = triton
            if part == "rms_norm":
                out: torch.Tensor = fused._RMSNorm.apply(x, norm_weight, 1e-5)
            else:
                out = fused._SiluMul.apply(gate_out, up_out)
            return out

        return run

    def loss_head(hidden: int, vocab: int, rows: int) -> dict[str, Callable[[], torch.Tensor]]:
        states = torch.randn(rows, hidden, device=device, dtype=torch.bfloat16)
        states.requires_grad_(True)
        head = torch.randn(vocab, hidden, device=device, dtype=torch.bfloat16) * 0.02
        targets = torch.randint(0, vocab, (rows,), device=device)

        def way(
            on: bool, block: int = 4096, warps: int = 8, chunk: int = loss.DEFAULT_CHUNK_ELEMENTS
        ) -> Callable[[], torch.Tensor]:
            def run() -> torch.Tensor:
                kernels.LOSS = on
                kernels._VOCAB_BLOCK, kernels._VOCAB_WARPS = block, warps
                return loss.linear_cross_entropy_sum(states, head, targets, chunk_elements=chunk)

            return run

        ways = {"chain": way(False), "kernel": way(True)}
        for block, warps in ((1024, 4), (2048, 4), (2048, 8), (8192, 16)):
            ways[f"kernel-b{block}-w{warps}"] = way(True, block, warps)
        # Chunks 4x the default's rows (the kernel keeps no float32 copy of them)
        ways["chain-chunk4x"] = way(False, chunk=4 * loss.DEFAULT_CHUNK_ELEMENTS)
        ways["kernel-chunk4x"] = way(True, chunk=4 * loss.DEFAULT_CHUNK_ELEMENTS)
        return ways

    vocab_defaults = kernels._VOCAB_BLOCK, kernels._VOCAB_WARPS
    seeded_ways = ("seeded-philox", "seeded-mix")
    parts: dict[str, Callable[[], dict[str, Callable[[], torch.Tensor]]]] = {
        "rms_norm": lambda: {
            "pytorch": elementwise("rms_norm", False),
            "triton": elementwise("rms_norm", True),
        },
        "swiglu": lambda: {
            "pytorch": elementwise("swiglu", False),
            "triton": elementwise("swiglu", True),
        },
        "lora": lambda: (
            {"bytes": lora(False), "bits": lora(True), "bits-torch": lora(True, False)}
            | {w: lora(True, way=w) for w in seeded_ways}
        ),
        "mlp": lambda: {w: mlp(w) for w in ("before", "recompute", "after", *seeded_ways)},
        "lora-small": lambda: {
            w: lora(True, way=w, inputs=x_small, q=q_small) for w in ("bits", *seeded_ways)
        },
        "loss-small": lambda: loss_head(896, 151936, small),
        "loss-8b": lambda: loss_head(HIDDEN, 128256, tokens),
    }
    chosen = [p for p in args.parts.split(",") if p] or list(parts)
    unknown = sorted(set(chosen) - set(parts))
    if unknown:
        sys.exit(f"unknown parts {unknown}; choose from {sorted(parts)}")
    for part in chosen:
        ways = parts[part]()
        part_tokens = small if part.endswith("-small") else tokens
        results = {way: measure(run, part_tokens, args.repeats) for way, run in ways.items()}
        first = next(iter(results.values()))
        for result in results.values():
            result["time_ratio"] = round(result["ms"] / first["ms"], 3)
            base = first["kept_bytes_per_token"]
            result["memory_ratio"] = (
                round(result["kept_bytes_per_token"] / base, 3) if base else None
            )
        line = {
            "part": part,
            "tokens": part_tokens,
            "gpu": torch.cuda.get_device_name(),
            "torch": torch.__version__,
            "ways": results,
        }
        print(json.dumps(line))
        del ways
        torch.cuda.empty_cache()
    fused.PACK_MASK_MIN_WIDTH = packing
    kernels.TRITON = True
    seeded("")
    kernels.LOSS = False
    kernels._VOCAB_BLOCK, kernels._VOCAB_WARPS = vocab_defaults


if __name__ == "__main__":
    main()
