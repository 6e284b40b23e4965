"""P-tuning: virtual token embeddings produced by a small trained prompt encoder (an MLP),
placed before every sample's input embeddings; the model itself stays frozen."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from worker.spec.methods.base import NO_ATTENTION, MethodInfo

if TYPE_CHECKING:
    from peft import PromptEncoderConfig

    from worker.spec.config import TrainConfig


def build_peft_config(config: TrainConfig, model: Any) -> PromptEncoderConfig:
    """A prompt encoder as wide as the model's embeddings."""
    from peft import PromptEncoderConfig, TaskType

    hidden = model.get_input_embeddings().embedding_dim
    return PromptEncoderConfig(
        task_type=TaskType.CAUSAL_LM,
        num_virtual_tokens=config.num_virtual_tokens,
        encoder_hidden_size=hidden,
    )


METHOD = MethodInfo(
    name="p_tuning",
    title="P-tuning",
    description=(
        "Learns the embeddings of a few virtual tokens placed before every sample, through a "
        "small prompt encoder; the model stays frozen and the adapter is tiny. Batches are "
        "padded, not packed."
    ),
    build=build_peft_config,
    prompt_learning=True,
    unsupported_model_types=NO_ATTENTION,
)
