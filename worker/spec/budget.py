"""The token budget of a packed forward pass, chosen from the memory of the GPU it runs on.

One rule for both sides: the engine applies it to the memory the GPU reports free once the
model and its adapter are loaded (``worker.training.budget``), the estimate at job creation to
the chosen GPU's memory less what loading will take (``worker.spec.estimate``).

- What a pass may keep for backward is the free memory, less what the step needs besides
  activations (gradients and AdamW's moments of the trained weights, the loss head's chunk of
  logits, a dequantised 4-bit weight in flight), times a safety margin for the allocator and
  for what the per-token figure leaves out.
- Divided by the bytes one token keeps for backward (the engine's per-layer count of the
  tensors its fused functions save, more for methods that run through PEFT's own layers),
  that gives the tokens of one pass, within ``MIN_BUDGET`` and the pass size past which
  longer passes stop paying (``SATURATION_WORK``, at most ``MAX_BUDGET``).
- A pass always holds at least the longest sample; if even that does not fit, gradient
  checkpointing comes on.
- An explicit ``micro_batch_tokens`` is used as given.

At run time a budget that turns out not to fit is halved and the step retried
(``worker.training.budget.StepFitter``), so the margin need not be pessimistic.

Torch-free: the web process calls it.
"""

from __future__ import annotations

from dataclasses import dataclass

# Share of the free memory (after the fixed needs) that activations may take: the rest is
# left to the caching allocator's fragmentation and to the working set of backward.
SAFETY_MARGIN = 0.85
MIN_BUDGET = 512
# Longer passes gain nothing measurable (the step's samples bound a pass anyway) and make
# the allocator's blocks larger.
MAX_BUDGET = 32768
# Work per pass (tokens x weights of one layer) past which a longer pass buys little and only
# takes memory. On an H200 (2026-12-05, Llama-3-8B LoRA, log-normal lengths, torch 2.11):
# passes of 4,096 / 8,192 / 18,634 tokens ran at 10.3k / 11.9k / 12.6k tokens/s with peaks of
# 39 / 61 / 105 GiB: 8,192 tokens of an 8B layer keep 94% of the rate with 58% of the memory.
# Smaller layers need more tokens per pass to keep the GPU busy (29k at 1B, the cap at 0.5B).
# Since the fused MLP recomputes the down projection's input and masks are kept as bits
# (2026-12-06, one H100): 4,096 / 6,144 / 8,192 tokens ran at 9.9k / 10.3k / 10.7k tokens/s
# with peaks of 31 / 38 / 45 GiB, so the cap stays.
SATURATION_WORK = 8192 * 218_103_808
# The loss head's chunk of float32 logits (worker.training.loss.DEFAULT_CHUNK_ELEMENTS), three
# copies at most in flight.
LOSS_CHUNK_ELEMENTS = 2**27

# Methods whose adapted linears run the engine's fused functions (worker.training.fused and
# fused_qlora): they keep the shared 16-bit input of each projection group. Other methods go
# through PEFT's own layers, which keep float32 copies of every adapted input.
FUSED_METHODS = frozenset({"lora", "qlora"})


# Inputs at least this wide keep their dropout keep mask packed eight elements to a byte in
# the fused LoRA functions (worker.training.fused). Packing costs four more kernel launches
# per projection, which pays only where tensors are large enough for memory, not launches,
# to bound a step.
PACK_MASK_MIN_WIDTH = 2048


# On a CUDA GPU the fused LoRA functions draw dropout inside Triton kernels from a seed and
# keep no mask (worker.training.kernels.DROPOUT is this), for ranks up to DROPOUT_KERNEL_MAX_RANK.
# The CPU path keeps its masks.
DROPOUT_KERNELS = True
DROPOUT_KERNEL_MAX_RANK = 128


def masks_kept(lora_r: object) -> bool:
    """Whether a GPU run of the fused LoRA path keeps dropout keep masks for backward
    (``lora_r`` as a config holds it: a rank, or "auto"/None before it is settled)."""
    rank = lora_r if isinstance(lora_r, int) else 0
    return not DROPOUT_KERNELS or rank > DROPOUT_KERNEL_MAX_RANK


def mask_bytes(width: int) -> int:
    """Bytes a token's dropout keep mask over an input of ``width`` takes in the fused path."""
    return width // 8 if width >= PACK_MASK_MIN_WIDTH and width % 8 == 0 else width


@dataclass(frozen=True)
class ModelShape:
    """What the rule needs of a decoder: its sizes."""

    hidden_size: int
    intermediate_size: int
    layers: int
    layer_weights: int = 0  # of one layer's projections; 0: unknown (no saturation cap)


def largest_useful(shape: ModelShape) -> int:
    """The pass size past which longer passes stop paying (see ``SATURATION_WORK``)."""
    if shape.layer_weights <= 0:
        return MAX_BUDGET
    return max(MIN_BUDGET, min(MAX_BUDGET, SATURATION_WORK // shape.layer_weights))


@dataclass(frozen=True)
class Budget:
    tokens: int
    checkpointing: bool
    from_memory: bool  # False when micro_batch_tokens was given


def activation_bytes_per_token(
    shape: ModelShape,
    *,
    lora_dropout: float,
    method: str = "lora",
    dora: bool = False,
    masks: bool = True,
) -> int:
    """Rough bytes kept for backward per token of a pass (16-bit activations).

    Per layer with the fused layers: the block input and the normalised inputs (hidden x 2
    bytes each), query, key, value and attention output, gate and up (intermediate each; their
    product is recomputed), plus a dropout keep mask per adapted input when dropout is on and
    ``masks`` (a byte an element, a bit for wide inputs: ``mask_bytes``; on a GPU the dropout
    kernels keep none: ``masks_kept``). Methods
    that run through PEFT's layers (DoRA, IA3, prompt learning) keep a float32 copy of each
    adapted input on top; full fine-tuning a float32 residual stream and a bf16 copy of each
    linear's input.
    """
    h, i = shape.hidden_size, shape.intermediate_size
    fused = method in FUSED_METHODS and not dora
    if fused:
        # The down projection's input, silu(gate) * up, is recomputed in backward; the keep
        # masks of the seven projections' inputs (six of hidden width, one intermediate).
        per_layer = 2 * (8 * h + 2 * i)
        if lora_dropout > 0 and masks:
            per_layer += 6 * mask_bytes(h) + mask_bytes(i)
        return shape.layers * per_layer
    per_layer = 2 * (8 * h + 3 * i)
    if lora_dropout > 0:
        per_layer += 5 * h + i
    if method == "full":
        per_layer += 2 * (6 * h + i) + 4 * h
    else:
        per_layer += 4 * (6 * h + i)
        if dora:
            per_layer += 8 * (4 * h + 2 * i)
    return shape.layers * per_layer


def fixed_bytes(*, trainable: int, shape: ModelShape, quantized: bool) -> int:
    """What a step needs besides activations once the model and its adapter are loaded:
    the float32 gradient and two AdamW moments of each trained weight, the loss head's chunk
    of logits, and for 4-bit weights one dequantised 16-bit layer weight in flight."""
    total = 12 * trainable + 3 * 4 * LOSS_CHUNK_ELEMENTS
    if quantized:
        total += 2 * 2 * shape.hidden_size * shape.intermediate_size
    return total


def token_budget(
    *,
    free_bytes: int,
    fixed: int,
    per_token: int,
    longest: int,
    explicit: int | None = None,
    margin: float = SAFETY_MARGIN,
    cap: int = MAX_BUDGET,
) -> Budget:
    """Tokens per packed pass and whether checkpointing is needed (see the module's text)."""
    available = margin * (free_bytes - fixed)
    per_token = max(1, per_token)
    longest = max(1, longest)
    if explicit is not None:
        tokens = max(explicit, longest)
        return Budget(tokens, longest * per_token > available, False)
    fit = int(available // per_token) if available > 0 else 0
    if fit < longest:
        return Budget(max(longest, MIN_BUDGET), True, True)
    return Budget(max(longest, min(cap, max(MIN_BUDGET, fit))), False, True)
