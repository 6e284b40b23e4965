"""The host's cost of one forward and backward pass through a model's layers, by variant.

The pass is the engine's (a packed row through the decoder, its attention
``tunelab_packed``), less the loss head. A pass over a handful of tokens leaves the GPU nearly idle, so its wall time is the host's:
the Python of the modules and autograd functions and the kernel launches they make. That is
what bounds a small model's step when the GPU's own work is short (``bench/trace_gaps.py``
reads the same thing out of a profile, slower and under the profiler's own cost).

Variants, each on a fresh LoRA model (r 16, alpha 32, dropout 0.05, every projection) of
the shape, in one process:

- ``peft``: PEFT's own LoRA layers, none of the engine's fused functions;
- ``fused``: the engine's fused layers and kernels (its default);
- ``fused-no-dropout-kernels``: the same with ``kernels.DROPOUT`` off (native dropout);
- ``fused-torch``: the fused functions with ``kernels.TRITON`` off (PyTorch everywhere);
- ``fused-p0``: the fused layers with LoRA dropout 0;
- ``frozen``: no adapters, the input embeddings alone need a gradient: the model's own
  module code, the floor any LoRA path sits on.

Prints one JSON line per variant: the median milliseconds of the whole pass (host and GPU,
synchronised after), of the host's part (until ``backward()`` returns), and their ratio to
the first variant.

    python bench/host_cost.py --shape qwen2.5-0.5b [--tokens 16] [--repeats 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.train_throughput import SHAPES, build_model, release, synchronize
from worker.spec.config import TrainConfig
from worker.training import attention, fused, kernels
from worker.training.adapters import build_peft_config

VARIANTS = ("peft", "fused", "fused-no-dropout-kernels", "fused-torch", "fused-p0", "frozen")


def lora_model(shape: str, dropout: float) -> Any:
    """The engine's adapter (``build_peft_config``: every projection) on the shape's model."""
    from peft import get_peft_model

    model = build_model(shape, seed=0)
    config = TrainConfig(
        base_model=f"random {shape}", lora_r=16, lora_alpha=32, lora_dropout=dropout
    )
    return get_peft_model(model, build_peft_config(config, model))


def time_passes(model: Any, tokens: int, repeats: int) -> tuple[float, float]:
    """The engine's pass over one packed row (``steps.micro_batch_loss``, less its loss
    head): the decoder with the row's sample boundaries, attention ``tunelab_packed``."""
    device = next(model.parameters()).device
    ids = torch.randint(0, 1000, (1, tokens), device=device)
    bounds = torch.tensor([0, tokens], dtype=torch.int32, device=device)
    inputs = {
        "input_ids": ids,
        "position_ids": torch.arange(tokens, device=device)[None],
        "cu_seq_lens_q": bounds,
        "cu_seq_lens_k": bounds,
        "max_length_q": tokens,
        "max_length_k": tokens,
        "use_cache": False,
    }
    decoder = model.get_decoder()
    model.train()
    whole: list[float] = []
    host: list[float] = []
    for i in range(repeats + 3):
        synchronize()
        started = time.perf_counter()
        out = decoder(**inputs).last_hidden_state
        out.float().mean().backward()
        returned = time.perf_counter()
        synchronize()
        done = time.perf_counter()
        model.zero_grad(set_to_none=True)
        if i >= 3:
            whole.append((done - started) * 1e3)
            host.append((returned - started) * 1e3)
    return statistics.median(whole), statistics.median(host)


def run_variant(shape: str, variant: str, tokens: int, repeats: int) -> dict[str, Any]:
    saved = (kernels.TRITON, kernels.DROPOUT)
    try:
        if variant == "frozen":
            model = build_model(shape, seed=0)
            model.requires_grad_(False)
            model.get_input_embeddings().weight.requires_grad_(True)
            return _timed(model, tokens, repeats, fused_count=0)
        model = lora_model(shape, 0.0 if variant == "fused-p0" else 0.05)
        if variant == "peft":
            return _timed(model, tokens, repeats, fused_count=0)
        kernels.DROPOUT = variant != "fused-no-dropout-kernels"
        kernels.TRITON = variant != "fused-torch"
        with fused.fused_modules(model) as report:
            return _timed(model, tokens, repeats, fused_count=report.fused)
    finally:
        kernels.TRITON, kernels.DROPOUT = saved
        release()


def _timed(model: Any, tokens: int, repeats: int, fused_count: int) -> dict[str, Any]:
    with attention.packed_attention(model):
        whole, host = time_passes(model, tokens, repeats)
    return {"ms": round(whole, 2), "host_ms": round(host, 2), "fused_modules": fused_count}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", action="append", choices=sorted(SHAPES), required=True)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    for shape in args.shape:
        first: float | None = None
        for variant in args.variants.split(","):
            line = {"shape": shape, "variant": variant, "tokens": args.tokens}
            line |= run_variant(shape, variant, args.tokens, args.repeats)
            first = first or line["ms"]
            line["ms_vs_first"] = round(line["ms"] / first, 3)
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
