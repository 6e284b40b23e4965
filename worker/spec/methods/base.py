"""What every training method declares, importable without torch.

The web process reads a method's title, description and compatibility check to fill the form
and to refuse a job before it is queued; only ``build`` (called by the engine, on a worker)
imports torch and PEFT, and it does so when called.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worker.spec.config import TrainConfig

# Builds the PEFT config for a loaded model; None means the model's own weights are trained.
Builder = Callable[["TrainConfig", Any], Any]

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
    build: Builder | None  # None: full fine-tuning, no adapter
    # Adds virtual tokens in front of every sample: the forward pass must go through the PEFT
    # model, on padded batches (a packed row would need them in front of each of its samples).
    prompt_learning: bool = False
    quantization: str | None = None  # how the base model is loaded ("nf4" for QLoRA)
    needs_cuda: str | None = None  # why the method cannot run without an NVIDIA GPU
    unsupported_model_types: Mapping[str, str] = field(default_factory=dict)

    @property
    def trains_all_weights(self) -> bool:
        """Full fine-tuning: no adapter, the model's own weights train and are saved."""
        return self.build is None

    def unsupported(self, model_type: str | None, *, cuda_available: bool) -> str | None:
        """Why this method cannot train a model of ``model_type`` on such a machine, or None."""
        if self.needs_cuda and not cuda_available:
            return self.needs_cuda
        reason = self.unsupported_model_types.get(model_type or "")
        if reason:
            return f"{self.title} cannot train this model: {reason}. Choose LoRA instead."
        return None
