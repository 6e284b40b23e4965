"""The adapter each training method puts on a loaded model: its PEFT config. Called by the
engine only (PEFT is imported when a builder runs); what the methods are is ``worker.spec.methods``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from worker.spec.errors import TrainingError

if TYPE_CHECKING:
    from peft import IA3Config, LoraConfig, PeftConfig, PrefixTuningConfig, PromptEncoderConfig

    from worker.spec.config import TrainConfig


def lora_config(config: TrainConfig, model: Any) -> LoraConfig:
    """LoRA on ``config.target_modules``; "auto" means every attention and MLP projection."""
    from peft import LoraConfig, TaskType

    rank, alpha, dropout = config.lora_r, config.lora_alpha, config.lora_dropout
    if isinstance(rank, str) or isinstance(alpha, str) or isinstance(dropout, str):
        # The engine resolves "auto" (see autoconfig) before it builds the adapter.
        raise TrainingError("lora_r, lora_alpha and lora_dropout must be resolved from auto.")
    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules(config, model),
        bias="none",
        use_rslora=config.use_rslora,
        use_dora=config.use_dora,
    )


def target_modules(config: TrainConfig, model: Any) -> list[str]:
    """The layer names the adapters go on, checked against the model."""
    from worker.training.models import linear_projection_names

    available = linear_projection_names(model)
    if config.target_modules == "auto":
        kernel_read = _read_by_mamba_kernels(model)
        targets = [name for name in available if name not in kernel_read]
    else:
        targets = list(config.target_modules)
        missing = [name for name in targets if not module_exists(model, name)]
        if missing:
            raise TrainingError(
                f"Target modules {', '.join(missing)} do not exist in this model; its "
                f"projection layers are: {', '.join(available)}."
            )
    if not targets:
        raise TrainingError("This model has no linear layers LoRA could adapt.")
    return targets


def _read_by_mamba_kernels(model: Any) -> set[str]:
    # A Mamba mixer reads the weights of out_proj (fused kernels) and dt_proj (both paths)
    # directly rather than calling the layers, so adapters there would never run or learn
    # (PEFT refuses out_proj outright). Left out of "auto"; in_proj and x_proj still adapt.
    names: set[str] = set()
    for parent in model.modules():
        cls = type(parent).__name__
        if "Mamba" in cls or cls.endswith("Mixer"):
            names.update(n for n, _ in parent.named_children() if n in ("out_proj", "dt_proj"))
    return names


def module_exists(model: Any, name: str) -> bool:
    """Whether PEFT would find ``name``: a full module name or a dotted suffix of one."""
    return any(full == name or full.endswith(f".{name}") for full, _ in model.named_modules())


# IA3's layers, found by inspection of the model rather than listed per architecture. Keys
# and values, separate or fused with the query (then the whole fused output is scaled):
_KEY_VALUE = ("k_proj", "v_proj", "key", "value", "key_proj", "value_proj")
_FUSED_QKV = ("qkv_proj", "query_key_value", "c_attn", "Wqkv", "W_pack")
# The projection that takes an MLP's hidden activations back to the model width; IA3 scales
# its input. "mlp.c_proj" names GPT-2's, whose attention output is also called c_proj.
_FEED_FORWARD = ("down_proj", "fc2", "dense_4h_to_h", "w2", "fc_out", "mlp.c_proj")


def ia3_config(config: TrainConfig, model: Any) -> IA3Config:
    """IA3 on the model's key, value and MLP output projections (or ``target_modules``)."""
    from peft import IA3Config, TaskType

    if config.target_modules == "auto":
        attention = [n for n in _KEY_VALUE if module_exists(model, n)] or [
            n for n in _FUSED_QKV if module_exists(model, n)
        ][:1]
        # Mixture-of-experts models whose experts are fused tensors (not linear layers) have
        # no MLP output projection to scale: IA3 then scales keys and values only.
        feed_forward = [n for n in _FEED_FORWARD if module_exists(model, n)][:1]
        if not attention:
            from worker.training.models import linear_projection_names

            raise TrainingError(
                "IA3 could not find this model's key and value projections; "
                "name them in target_modules (its projection layers are: "
                f"{', '.join(linear_projection_names(model))})."
            )
        targets = attention + feed_forward
    else:
        targets = target_modules(config, model)
        feed_forward = [n for n in targets if n in _FEED_FORWARD]
    return IA3Config(
        task_type=TaskType.CAUSAL_LM, target_modules=targets, feedforward_modules=feed_forward
    )


def prefix_tuning_config(config: TrainConfig, model: Any) -> PrefixTuningConfig:
    """A prefix of ``config.num_virtual_tokens`` keys and values per layer."""
    from peft import PrefixTuningConfig, TaskType

    return PrefixTuningConfig(
        task_type=TaskType.CAUSAL_LM, num_virtual_tokens=config.num_virtual_tokens
    )


def p_tuning_config(config: TrainConfig, model: Any) -> PromptEncoderConfig:
    """A prompt encoder as wide as the model's embeddings."""
    from peft import PromptEncoderConfig, TaskType

    hidden = model.get_input_embeddings().embedding_dim
    return PromptEncoderConfig(
        task_type=TaskType.CAUSAL_LM,
        num_virtual_tokens=config.num_virtual_tokens,
        encoder_hidden_size=hidden,
    )


# None: the model's own weights train (full fine-tuning).
BUILDERS: dict[str, Callable[[TrainConfig, Any], Any] | None] = {
    "lora": lora_config,
    "qlora": lora_config,  # on the 4-bit base the engine loaded
    "prefix_tuning": prefix_tuning_config,
    "p_tuning": p_tuning_config,
    "ia3": ia3_config,
    "full": None,
}


def build_peft_config(config: TrainConfig, model: Any) -> PeftConfig | None:
    """The PEFT config for ``config.method`` applied to ``model``; None for full fine-tuning."""
    build = BUILDERS[config.method]
    return None if build is None else build(config, model)
