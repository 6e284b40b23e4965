"""Full fine-tuning: every weight of the model is trained and the whole model is saved.

Meant for small models: the weights are kept in float32 (bfloat16 updates would round most
small steps away) and AdamW keeps two more float32 values per weight, about 16 bytes per
parameter before activations. On a GPU the forward pass runs in bfloat16 under autocast.
"""

from __future__ import annotations

from worker.spec.methods.base import MethodInfo

METHOD = MethodInfo(
    name="full",
    title="Full fine-tuning",
    description=(
        "Trains every weight and saves a complete model instead of an adapter. For small "
        "models: it needs about 16 bytes of memory per parameter (float32 weights, gradients "
        "and optimiser state) plus activations."
    ),
    build=None,
)
