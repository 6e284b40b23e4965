"""Prefix-tuning: learned keys and values for a number of virtual tokens in front of every
sample, in every attention layer; the model itself stays frozen."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from worker.spec.methods.base import HYBRID_CACHE, NO_ATTENTION, MethodInfo

if TYPE_CHECKING:
    from peft import PrefixTuningConfig

    from worker.spec.config import TrainConfig


def build_peft_config(config: TrainConfig, model: Any) -> PrefixTuningConfig:
    """A prefix of ``config.num_virtual_tokens`` keys and values per layer."""
    from peft import PrefixTuningConfig, TaskType

    return PrefixTuningConfig(
        task_type=TaskType.CAUSAL_LM, num_virtual_tokens=config.num_virtual_tokens
    )


METHOD = MethodInfo(
    name="prefix_tuning",
    title="Prefix-tuning",
    description=(
        "Learns attention keys and values for a few virtual tokens placed before every "
        "sample, in every layer; the model stays frozen and the adapter is tiny. Batches are "
        "padded, not packed."
    ),
    build=build_peft_config,
    prompt_learning=True,
    unsupported_model_types={
        **NO_ATTENTION,
        **HYBRID_CACHE,
        # Multi-query Falcon keeps one key/value head whose cache layout PEFT's prefix
        # does not produce.
        "falcon": "Falcon's multi-query attention cache does not take a prefix",
    },
)
