"""Training methods: each module turns the validated run config into what gets trained.

A method is one module here holding a ``METHOD`` (see ``base.MethodInfo``) and one entry in
METHODS below and in ``config.METHODS``. Nothing here imports torch until a method's ``build``
is called, so the web process reads titles, descriptions and compatibility checks from the
same objects the engine trains with.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from worker.spec.methods import full, ia3, lora, p_tuning, prefix_tuning, qlora
from worker.spec.methods.base import MethodInfo

if TYPE_CHECKING:
    from peft import PeftConfig

    from worker.spec.config import TrainConfig

METHODS: dict[str, MethodInfo] = {
    module.METHOD.name: module.METHOD
    for module in (lora, qlora, prefix_tuning, p_tuning, ia3, full)
}


def build_peft_config(config: TrainConfig, model: Any) -> PeftConfig | None:
    """The PEFT config for ``config.method`` applied to ``model``; None for full fine-tuning."""
    build = METHODS[config.method].build
    return None if build is None else build(config, model)
