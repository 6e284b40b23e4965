"""Regional compilation: each decoder layer run through ``torch.compile`` for models whose
layers are too small to keep a GPU busy.

At 0.5B and 1B a whole optimiser step is one packed pass of a few thousand tokens, and each
layer's products take microseconds: the time goes to Python and kernel launches between them
(the RMSNorms, rotary embeddings, dropout, residual adds and SwiGLU are a dozen small kernels
each, forward and backward). Compiling the decoder layer fuses those into a few kernels and
runs the layer's forward and backward as generated code rather than module by module.

- **What is compiled**: the decoder layer module, each layer on its own, with the engine's
  fused LoRA, RMSNorm and SwiGLU functions inside it. All layers share one compiled graph
  (their weights are its inputs), so the compile cost is one layer's, not one per layer.
  Attention is left out (``attention.packed_attention_forward`` is one FlashAttention kernel,
  and the sample boundaries it reads differ from pass to pass): it runs eagerly between the
  layer's two compiled halves.
- **Shapes**: a packed row's length changes from pass to pass. By default the layers compile
  once, at the first pass, for any length (``dynamic=True``; the weights' shapes stay fixed):
  one compile per run whatever the lengths, no padding, and code that the next run of the
  same model shape loads from the cache whatever its data. (Torch's automatic dynamic shapes
  compiled twice: for the first length, then at the second for any length.) The first
  layer's input is made to require a gradient as the others' do, so every layer runs the same
  graph. With CUDA graphs (``TUNELAB_COMPILE_MODE=reduce-overhead``, which replays recorded
  kernels and so needs fixed shapes) each row is padded to ``packing.bucket_length`` (at most
  four lengths per doubling, under a quarter of the row) and compiled per length
  (``dynamic=False``); the filler is a segment of its own and predicts nothing.
- **When**: ``TUNELAB_COMPILE`` (worker setting) ``auto`` (default) compiles packed LoRA runs
  on a CUDA GPU whose layers hold between ``MIN_LAYER_WEIGHTS`` and ``SMALL_LAYER_WEIGHTS``
  weights (Llama-3.2-1B; an 8B layer keeps the GPU busy on its own, and Qwen2.5-0.5B's ran
  no faster compiled), for runs long enough to repay the compile (``COMPILE_PAYS_TOKENS``
  training tokens), not 4-bit (QLoRA) layers, DoRA or
  other methods, not with gradient checkpointing, and only where a C compiler is installed
  (Triton builds its launchers with it); ``off`` never; ``on`` wherever rows are packed, a
  CPU included (used by the tests). A layer that fails to compile runs eagerly instead.
- **Cache**: compiled code is kept in ``TORCHINDUCTOR_CACHE_DIR``, by default the folder
  ``compile-cache`` of the data folder (``TUNELAB_DATA_DIR``, else ``~/.tunelab``), so the
  next run of the same model shape and row lengths loads it instead of compiling again.
  Compile time is part of a run's first steps and of its measured speed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from worker.training.packing import layer_weights

MODE_ENV = "TUNELAB_COMPILE"
# torch.compile's mode for the layers ("default", "reduce-overhead", ...); for experiments.
COMPILE_MODE_ENV = "TUNELAB_COMPILE_MODE"
MODES = ("auto", "on", "off")
# Weights of one decoder layer's projections up to which ``auto`` compiles: Qwen2.5-0.5B has
# 15M, Llama-3.2-1B 61M, Llama-3.2-3B 101M, Llama-3-8B 218M.
SMALL_LAYER_WEIGHTS = 80_000_000
# ... and from which: measured on an H100 (2026-12-05, bench/train_throughput.py), compiled
# Qwen2.5-0.5B layers (15M) ran at 0.98x and 0.77x of eager ones (lognormal, chat-short),
# where Llama-3.2-1B's (61M) ran at 1.22x and 1.14x.
MIN_LAYER_WEIGHTS = 30_000_000
# Training tokens a run needs before the compile repays its time: the first pass of a cold
# cache took 84-94 s longer compiled, and compiled Llama-3.2-1B layers saved 2.8-3.8 us a
# token (same measurement): 22-31M tokens. ``auto`` leaves shorter runs eager.
COMPILE_PAYS_TOKENS = 25_000_000
# Shapes kept per compiled frame before torch falls back to eager (its default is 8): a few
# row lengths, each for training and for validation (no gradients).
_RECOMPILE_LIMIT = 64


def setting() -> str:
    """``TUNELAB_COMPILE``: auto, on or off (anything else counts as auto)."""
    return switch(MODE_ENV)


def switch(name: str) -> str:
    """A worker setting that is auto, on or off (anything else counts as auto)."""
    value = os.environ.get(name, "auto").strip().lower()
    return value if value in MODES else "auto"


def cuda_graphs() -> bool:
    """Whether the layers are compiled to replay CUDA graphs (fixed row lengths)."""
    return os.environ.get(COMPILE_MODE_ENV, "") in ("reduce-overhead", "max-autotune")


def decide(
    lm: Any,
    device: torch.device,
    *,
    packed: bool,
    checkpointing: bool,
    method: str = "lora",
    dora: bool = False,
    run_tokens: float | None = None,
) -> tuple[bool, str]:
    """Whether this run compiles its decoder layers, and why (or why not). ``run_tokens``:
    the tokens the whole run trains on (None: not known, not a reason to stay eager)."""
    mode = setting()
    if mode == "off":
        return False, f"{MODE_ENV}=off"
    if not packed:
        return False, "rows are not packed"
    if decoder_layers(lm) is None:
        return False, "the model has no list of decoder layers"
    if _quantized(lm):
        return False, "4-bit layers are not compiled"
    if checkpointing:
        return False, "gradient checkpointing is on"
    if mode == "on":
        return True, f"{MODE_ENV}=on"
    if device.type != "cuda":
        return False, "not on a CUDA GPU"
    if method != "lora" or dora:
        return False, "only plain LoRA runs are compiled by default"
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        return False, "no C compiler for torch.compile"
    weights = layer_weights(lm.config)
    if weights > SMALL_LAYER_WEIGHTS:
        return False, f"layers of {weights / 1e6:.0f}M weights keep the GPU busy uncompiled"
    if weights < MIN_LAYER_WEIGHTS:
        return False, f"layers of {weights / 1e6:.0f}M weights ran no faster compiled"
    if run_tokens is not None and run_tokens < COMPILE_PAYS_TOKENS:
        return False, (
            f"a run of {run_tokens / 1e6:.1f}M tokens is too short to repay the compile time "
            f"(about {COMPILE_PAYS_TOKENS / 1e6:.0f}M)"
        )
    return True, f"layers of {weights / 1e6:.0f}M weights are launch-bound uncompiled"


def decoder_layers(lm: Any) -> torch.nn.ModuleList | None:
    """The repeated decoder blocks of a causal LM, or None when it has no such list."""
    try:
        decoder = lm.get_decoder()
    except (AttributeError, NotImplementedError):
        return None
    layers = getattr(decoder, "layers", None)
    if isinstance(layers, torch.nn.ModuleList) and len(layers) > 0:
        return layers
    return None


def _quantized(lm: Any) -> bool:
    return any(p.dtype == torch.uint8 for p in lm.parameters())


def cache_dir() -> Path:
    """Where compiled code is kept between runs."""
    explicit = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if explicit:
        return Path(explicit)
    data = os.environ.get("TUNELAB_DATA_DIR")
    return (Path(data) if data else Path.home() / ".tunelab") / "compile-cache"


@contextlib.contextmanager
def compiled_layers(lm: Any) -> Iterator[int]:
    """Compile every decoder layer of ``lm`` for the block (each compiles on its first pass
    of a new shape); yields how many. The layers run their own forward again afterwards."""
    layers = decoder_layers(lm)
    if layers is None:
        yield 0
        return
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)
    import torch._dynamo

    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit"):
        if hasattr(torch._dynamo.config, name):
            current = getattr(torch._dynamo.config, name)
            setattr(torch._dynamo.config, name, max(current, _RECOMPILE_LIMIT))
    mode = os.environ.get(COMPILE_MODE_ENV) or None
    dynamic = not cuda_graphs()  # one compile for any length; fixed lengths for CUDA graphs
    for layer in layers:
        layer.compile(dynamic=dynamic, mode=mode)
    suppress = torch._dynamo.config.suppress_errors
    torch._dynamo.config.suppress_errors = True  # a frame that fails to compile runs eagerly
    hook = _first_input_needs_grad(lm)
    try:
        yield len(layers)
    finally:
        if hook is not None:
            hook.remove()
        torch._dynamo.config.suppress_errors = suppress
        for layer in layers:
            layer._compiled_call_impl = None


def _first_input_needs_grad(lm: Any) -> Any:
    """Make the embeddings' output require a gradient while gradients are on (frozen
    embeddings give one that does not), so the first layer's input is like every other's and
    all layers share one compiled graph instead of two (half the compile time). Costs the
    first layer's input-gradient products, which frozen embeddings would skip: about 1/(2 x
    layers) of a step's matrix work (2% at 24 layers), cheap where launches, not products,
    bound the step."""
    try:
        embeddings = lm.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    if not isinstance(embeddings, torch.nn.Module):
        return None

    def needs_grad(module: Any, args: Any, output: Any) -> Any:
        if (
            torch.is_grad_enabled()
            and isinstance(output, torch.Tensor)
            and output.is_floating_point()
            and not output.requires_grad
        ):
            output.requires_grad_(True)
        return output

    return embeddings.register_forward_hook(needs_grad)
