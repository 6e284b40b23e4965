"""LoRA: low-rank adapters on the linear layers of the transformer blocks, optionally
rank-stabilised (rsLoRA) or weight-decomposed (DoRA)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from worker.spec.errors import TrainingError
from worker.spec.methods.base import MethodInfo

if TYPE_CHECKING:
    from peft import LoraConfig

    from worker.spec.config import TrainConfig


def build_peft_config(config: TrainConfig, model: Any) -> LoraConfig:
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


METHOD = MethodInfo(
    name="lora",
    title="LoRA",
    description=(
        "Low-rank adapters on the attention and MLP projections; the base model stays frozen "
        "and the result is a small adapter. rsLoRA scales the adapters by alpha/sqrt(rank) "
        "(steadier at high ranks); DoRA also learns each weight's magnitude (closer to full "
        "fine-tuning, slower per step)."
    ),
    build=build_peft_config,
)
