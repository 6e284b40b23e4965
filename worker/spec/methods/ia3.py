"""IA3: learned per-channel scales on the attention keys and values and on the input of each
MLP's output projection; the model stays frozen and the adapter is a few vectors per layer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from worker.spec.errors import TrainingError
from worker.spec.methods import lora
from worker.spec.methods.base import NO_ATTENTION, MethodInfo

if TYPE_CHECKING:
    from peft import IA3Config

    from worker.spec.config import TrainConfig

# Layer names, found by inspection of the model rather than listed per architecture. Keys and
# values, separate or fused with the query (then the whole fused output is scaled):
_KEY_VALUE = ("k_proj", "v_proj", "key", "value", "key_proj", "value_proj")
_FUSED_QKV = ("qkv_proj", "query_key_value", "c_attn", "Wqkv", "W_pack")
# The projection that takes an MLP's hidden activations back to the model width; IA3 scales
# its input. "mlp.c_proj" names GPT-2's, whose attention output is also called c_proj.
_FEED_FORWARD = ("down_proj", "fc2", "dense_4h_to_h", "w2", "fc_out", "mlp.c_proj")


def build_peft_config(config: TrainConfig, model: Any) -> IA3Config:
    """IA3 on the model's key, value and MLP output projections (or ``target_modules``)."""
    from peft import IA3Config, TaskType

    if config.target_modules == "auto":
        attention = [n for n in _KEY_VALUE if lora.module_exists(model, n)] or [
            n for n in _FUSED_QKV if lora.module_exists(model, n)
        ][:1]
        # Mixture-of-experts models whose experts are fused tensors (not linear layers) have
        # no MLP output projection to scale: IA3 then scales keys and values only.
        feed_forward = [n for n in _FEED_FORWARD if lora.module_exists(model, n)][:1]
        if not attention:
            from worker.training.models import linear_projection_names

            raise TrainingError(
                "IA3 could not find this model's key and value projections; "
                "name them in target_modules (its projection layers are: "
                f"{', '.join(linear_projection_names(model))})."
            )
        targets = attention + feed_forward
    else:
        targets = lora.target_modules(config, model)
        feed_forward = [n for n in targets if n in _FEED_FORWARD]
    return IA3Config(
        task_type=TaskType.CAUSAL_LM, target_modules=targets, feedforward_modules=feed_forward
    )


METHOD = MethodInfo(
    name="ia3",
    title="IA3",
    description=(
        "Learns a scale for every channel of the attention keys and values and of the MLP "
        "activations (keys and values only where a mixture of experts fuses its MLPs); the "
        "model stays frozen and the adapter is a few vectors per layer. "
        "Fewest trainable weights; usually wants a higher learning rate (around 3e-3)."
    ),
    build=build_peft_config,
    unsupported_model_types=NO_ATTENTION,
)
