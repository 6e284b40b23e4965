"""QLoRA: LoRA on a base model loaded in 4 bits (NF4 with double quantisation).

The frozen weights take about a quarter of their 16-bit memory; the adapters stay in float32
and compute in bfloat16. The 4-bit layers are bitsandbytes' CUDA kernels, so the method needs
an NVIDIA GPU and refuses, before queueing, a machine without one.
"""

from __future__ import annotations

from worker.spec.methods import lora
from worker.spec.methods.base import MethodInfo

METHOD = MethodInfo(
    name="qlora",
    title="QLoRA",
    description=(
        "LoRA on the base model loaded in 4 bits (NF4, double quantisation): about a quarter "
        "of the memory for the frozen weights, somewhat slower per step. Needs an NVIDIA GPU. "
        "rsLoRA and DoRA apply as for LoRA."
    ),
    build=lora.build_peft_config,
    quantization="nf4",
    needs_cuda=(
        "QLoRA needs an NVIDIA GPU (CUDA) to run its 4-bit layers, and the workers here have "
        "none. Choose LoRA instead."
    ),
)
