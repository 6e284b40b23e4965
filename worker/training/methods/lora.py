"""LoRA: low-rank adapters on the linear layers of the transformer blocks."""

from __future__ import annotations

from peft import LoraConfig, TaskType
from torch import nn

from worker.training.config import TrainConfig
from worker.training.errors import TrainingError
from worker.training.models import linear_projection_names


def build_peft_config(config: TrainConfig, model: nn.Module) -> LoraConfig:
    """LoRA on ``config.target_modules``; "auto" means every attention and MLP projection."""
    available = linear_projection_names(model)
    if config.target_modules == "auto":
        targets = available
    else:
        targets = list(config.target_modules)
        missing = [name for name in targets if not _exists(model, name)]
        if missing:
            raise TrainingError(
                f"Target modules {', '.join(missing)} do not exist in this model; its "
                f"projection layers are: {', '.join(available)}."
            )
    if not targets:
        raise TrainingError("This model has no linear layers LoRA could adapt.")
    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        bias="none",
    )


def _exists(model: nn.Module, name: str) -> bool:
    # PEFT matches a target against the full module name or its dotted suffix.
    return any(full == name or full.endswith(f".{name}") for full, _ in model.named_modules())
