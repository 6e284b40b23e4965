"""Parameter-efficient methods: each module turns the run config into a PEFT config.

Adding a method means one module here and one entry in METHODS (and in config.METHODS).
"""

from __future__ import annotations

from collections.abc import Callable

from peft import PeftConfig
from torch import nn

from worker.training.config import TrainConfig
from worker.training.methods import lora

MethodBuilder = Callable[[TrainConfig, nn.Module], PeftConfig]

METHODS: dict[str, MethodBuilder] = {
    "lora": lora.build_peft_config,
}


def build_peft_config(config: TrainConfig, model: nn.Module) -> PeftConfig:
    """The PEFT config for ``config.method`` applied to ``model``."""
    return METHODS[config.method](config, model)
