"""The training methods as both sides know them: title, description, what a method needs and
which model types it cannot train. The web reads them to fill the form and to refuse a job
before it is queued; the engine builds each method's adapter in ``worker.training.adapters``.

Adding a method: a ``MethodInfo`` here (and its name in ``config.METHODS``), and a builder in
``worker.training.adapters``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# Model types are config.json's ``model_type``. The lists below were checked against
# transformers 5.24 and PEFT 0.21 by training small random models of some 35 types for one
# step with each method and generating from them; a few of those types are kept as a test
# (test_check_method_refuses_exactly_what_cannot_train).

# Models with no attention at all (state-space and recurrent): there are no keys and values
# to prefix or scale, and PEFT's prompt learning needs an attention head count they lack.
NO_ATTENTION: Mapping[str, str] = {
    "mamba": "Mamba is a state-space model with no attention layers",
    "mamba2": "Mamba-2 is a state-space model with no attention layers",
    "falcon_mamba": "Falcon-Mamba is a state-space model with no attention layers",
    "rwkv": "RWKV is a recurrent model with no attention layers",
    "xlstm": "xLSTM is a recurrent model with no attention layers",
}

# Models that mix attention layers with state-space, convolution or linear-attention layers:
# their generation cache holds more than keys and values, and a prefix of keys and values
# does not fit it.
HYBRID_CACHE: Mapping[str, str] = {
    "jamba": "Jamba mixes Mamba layers into its attention layers",
    "bamba": "Bamba mixes Mamba layers into its attention layers",
    "zamba": "Zamba mixes Mamba layers into its attention layers",
    "zamba2": "Zamba2 mixes Mamba layers into its attention layers",
    "nemotron_h": "Nemotron-H mixes Mamba layers into its attention layers",
    "granitemoehybrid": "Granite 4.0 hybrid mixes Mamba layers into its attention layers",
    "falcon_h1": "Falcon-H1 runs Mamba heads beside its attention heads",
    "qwen3_next": "Qwen3-Next mixes linear-attention layers into its attention layers",
    "minimax": "MiniMax mixes linear-attention layers into its attention layers",
    "recurrent_gemma": "RecurrentGemma mixes recurrent layers into its attention layers",
}


@dataclass(frozen=True)
class MethodInfo:
    """One training method: how the form shows it and what it can work with."""

    name: str  # as in TrainConfig.method
    title: str
    description: str
    # Adds virtual tokens in front of every sample: the forward pass must go through the PEFT
    # model, on padded batches (a packed row would need them in front of each of its samples).
    prompt_learning: bool = False
    quantization: str | None = None  # how the base model is loaded ("nf4" for QLoRA)
    needs_cuda: str | None = None  # why the method cannot run without an NVIDIA GPU
    unsupported_model_types: Mapping[str, str] = field(default_factory=dict)
    # Full fine-tuning: no adapter, the model's own weights train and are saved.
    trains_all_weights: bool = False

    def unsupported(self, model_type: str | None, *, cuda_available: bool) -> str | None:
        """Why this method cannot train a model of ``model_type`` on such a machine, or None."""
        if self.needs_cuda and not cuda_available:
            return self.needs_cuda
        reason = self.unsupported_model_types.get(model_type or "")
        if reason:
            return f"{self.title} cannot train this model: {reason}. Choose LoRA instead."
        return None


# LoRA: low-rank adapters on the linear layers of the transformer blocks, optionally
# rank-stabilised (rsLoRA) or weight-decomposed (DoRA).
LORA = MethodInfo(
    name="lora",
    title="LoRA",
    description=(
        "Low-rank adapters on the attention and MLP projections; the base model stays frozen "
        "and the result is a small adapter. rsLoRA scales the adapters by alpha/sqrt(rank) "
        "(steadier at high ranks); DoRA also learns each weight's magnitude (closer to full "
        "fine-tuning, slower per step)."
    ),
)


# QLoRA: LoRA on a base model loaded in 4 bits (NF4 with double quantisation).
#
# The frozen weights take about a quarter of their 16-bit memory; the adapters stay in float32
# and compute in bfloat16. The 4-bit layers are bitsandbytes' CUDA kernels, so the method needs
# an NVIDIA GPU and refuses, before queueing, a machine without one.
QLORA = MethodInfo(
    name="qlora",
    title="QLoRA",
    description=(
        "LoRA on the base model loaded in 4 bits (NF4, double quantisation): about a quarter "
        "of the memory for the frozen weights, somewhat slower per step. Needs an NVIDIA GPU. "
        "rsLoRA and DoRA apply as for LoRA."
    ),
    quantization="nf4",
    needs_cuda=(
        "QLoRA needs an NVIDIA GPU (CUDA) to run its 4-bit layers, and the workers here have "
        "none. Choose LoRA instead."
    ),
)


# Prefix-tuning: learned keys and values for a number of virtual tokens in front of every
# sample, in every attention layer; the model itself stays frozen.
PREFIX_TUNING = MethodInfo(
    name="prefix_tuning",
    title="Prefix-tuning",
    description=(
        "Learns attention keys and values for a few virtual tokens placed before every "
        "sample, in every layer; the model stays frozen and the adapter is tiny. Batches are "
        "padded, not packed."
    ),
    prompt_learning=True,
    unsupported_model_types={
        **NO_ATTENTION,
        **HYBRID_CACHE,
        # Multi-query Falcon keeps one key/value head whose cache layout PEFT's prefix
        # does not produce.
        "falcon": "Falcon's multi-query attention cache does not take a prefix",
    },
)


# P-tuning: virtual token embeddings produced by a small trained prompt encoder (an MLP),
# placed before every sample's input embeddings; the model itself stays frozen.
P_TUNING = MethodInfo(
    name="p_tuning",
    title="P-tuning",
    description=(
        "Learns the embeddings of a few virtual tokens placed before every sample, through a "
        "small prompt encoder; the model stays frozen and the adapter is tiny. Batches are "
        "padded, not packed."
    ),
    prompt_learning=True,
    unsupported_model_types=NO_ATTENTION,
)


# IA3: learned per-channel scales on the attention keys and values and on the input of each
# MLP's output projection; the model stays frozen and the adapter is a few vectors per layer.
IA3 = MethodInfo(
    name="ia3",
    title="IA3",
    description=(
        "Learns a scale for every channel of the attention keys and values and of the MLP "
        "activations (keys and values only where a mixture of experts fuses its MLPs); the "
        "model stays frozen and the adapter is a few vectors per layer. "
        "Fewest trainable weights; usually wants a higher learning rate (around 3e-3)."
    ),
    unsupported_model_types=NO_ATTENTION,
)


# Full fine-tuning: every weight of the model is trained and the whole model is saved.
#
# Meant for small models: the weights are kept in float32 (bfloat16 updates would round most
# small steps away) and AdamW keeps two more float32 values per weight, about 16 bytes per
# parameter before activations. On a GPU the forward pass runs in bfloat16 under autocast.
FULL = MethodInfo(
    name="full",
    title="Full fine-tuning",
    description=(
        "Trains every weight and saves a complete model instead of an adapter. For small "
        "models: it needs about 16 bytes of memory per parameter (float32 weights, gradients "
        "and optimiser state) plus activations."
    ),
    trains_all_weights=True,
)


METHODS: dict[str, MethodInfo] = {
    m.name: m for m in (LORA, QLORA, PREFIX_TUNING, P_TUNING, IA3, FULL)
}
