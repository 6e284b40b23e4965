"""The CPU path's LoRA dropout: a keep mask multiplied in as 1s and 0s, against torch.where.

On one CPU core, at SmolLM2-135M's projection widths (576 -> 576, 576 -> 1,536, 1,536 -> 576)
over ``--tokens`` tokens in bfloat16 (float32 with ``--dtype float32``), this times what the
dropout costs in one fused LoRA linear's forward and backward
(``worker.training.fused._lora_product`` / ``_lora_grads`` on a CPU):

- ``where``: the mask drawn and compared into a bool tensor, then applied three times with
  ``torch.where(mask, t, 0)`` (the input in forward; in backward the input again and the
  gradient through A), the form the CPU path used before;
- ``multiply``: the engine's form now: the mask made by an integer clamp of the same draw,
  turned once per pass into 1s and 0s of the compute dtype (``fused._cpu_keep``) and
  multiplied in.

Both give the same values (checked here). For scale it also times the whole fused LoRA linear
(forward and backward of a PEFT LoRA layer under ``fused.fused_modules``). Prints one JSON line
per width: median milliseconds of each way, their ratio, and the layer's total.

    python bench/cpu_dropout.py [--tokens 1024] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from worker.training import fused

P = 0.05


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append((time.perf_counter() - began) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dtype = getattr(torch, args.dtype)
    for width_in, width_out in ((576, 576), (576, 1536), (1536, 576)):
        line = {"width_in": width_in, "width_out": width_out, "tokens": args.tokens}
        line |= {"dtype": args.dtype, **time_width(width_in, width_out, dtype, args)}
        print(json.dumps(line), flush=True)


def time_width(
    width_in: int, width_out: int, dtype: torch.dtype, args: argparse.Namespace
) -> dict[str, float]:
    x = torch.randn(args.tokens, width_in, dtype=dtype)
    g_b_a = torch.randn(args.tokens, width_in, dtype=dtype)  # stands in for g_b @ a
    threshold = round(P * 65536) - 32768

    def with_where() -> tuple[torch.Tensor, ...]:
        count = x.numel()
        words = torch.randint(-(2**63), 2**63 - 1, ((count + 3) // 4,), dtype=torch.int64)
        mask = words.view(torch.int16)[:count].view(x.shape) >= threshold
        return torch.where(mask, x, 0), torch.where(mask, g_b_a, 0), torch.where(mask, x, 0)

    def with_multiply() -> tuple[torch.Tensor, ...]:
        mask = fused._cpu_keep_mask(x.shape, P)
        keep = fused._cpu_keep(mask, dtype)  # forward
        dropped = x * keep
        keep = fused._cpu_keep(mask, dtype)  # backward makes it again from the mask
        return dropped, g_b_a * keep, x * keep

    torch.manual_seed(0)
    before = with_where()
    torch.manual_seed(0)
    after = with_multiply()
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    where_ms = median_ms(with_where, args.repeats)
    multiply_ms = median_ms(with_multiply, args.repeats)
    layer_ms = median_ms(layer_step(width_in, width_out, dtype, args.tokens), args.repeats)
    return {
        "where_ms": round(where_ms, 3),
        "multiply_ms": round(multiply_ms, 3),
        "multiply_over_where": round(multiply_ms / where_ms, 3),
        "fused_lora_linear_ms": round(layer_ms, 3),
        "saved_share_of_layer": round((where_ms - multiply_ms) / layer_ms, 3),
    }


def layer_step(
    width_in: int, width_out: int, dtype: torch.dtype, tokens: int
) -> Callable[[], None]:
    """One fused LoRA linear's forward and backward (the engine's CPU path, as it is now)."""
    from peft import LoraConfig, get_peft_model

    class Projection(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = torch.nn.Linear(width_in, width_out, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.proj(x)  # type: ignore[no-any-return]

    config = LoraConfig(r=8, lora_alpha=16, lora_dropout=P, target_modules=["proj"])
    model = get_peft_model(Projection().to(dtype), config)
    x = torch.randn(tokens, width_in, dtype=dtype, requires_grad=True)
    patched = fused.fused_modules(model)
    report = patched.__enter__()  # kept in place for the process's life
    assert report.lora_linear == 1, report

    def step() -> None:
        model(x).float().sum().backward()

    return step


if __name__ == "__main__":
    main()
