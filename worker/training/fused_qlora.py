"""A 16-bit model's block linears quantised to 4 bits in place, as loading it for QLoRA would.

The engine loads QLoRA models through transformers' ``BitsAndBytesConfig`` (``models``). A
benchmark or test that builds a random-initialised model of a real shape has no checkpoint to
load: ``quantize_nf4`` turns the decoder blocks' ``nn.Linear`` layers into bitsandbytes
``Linear4bit`` (NF4, double quantisation, computing in the weights' dtype) on the GPU, and
marks the model as loaded in 4 bits so that PEFT wraps those layers with its 4-bit LoRA
layer, which ``fused`` then runs through its fused QLoRA function.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def quantize_nf4(model: Any, *, skip: tuple[str, ...] = ("lm_head",)) -> int:
    """Replace every ``nn.Linear`` of ``model`` (but ``skip``) by an NF4 ``Linear4bit`` on the
    linear's own CUDA device. Returns how many were replaced."""
    import bitsandbytes as bnb

    replaced = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is not nn.Linear or child_name in skip:
                continue
            weight = child.weight
            if weight.device.type != "cuda":
                raise ValueError(f"{name}.{child_name} is not on a CUDA device")
            layer = bnb.nn.Linear4bit(
                child.in_features,
                child.out_features,
                bias=child.bias is not None,
                compute_dtype=weight.dtype,
                compress_statistics=True,
                quant_type="nf4",
                device="meta",
            )
            packed = bnb.nn.Params4bit(
                weight.data, requires_grad=False, compress_statistics=True, quant_type="nf4"
            ).to(weight.device)
            layer.weight = packed
            if child.bias is not None:
                layer.bias = nn.Parameter(child.bias.data, requires_grad=False)
            layer.train(child.training)
            setattr(module, child_name, layer)
            replaced += 1
    model.is_loaded_in_4bit = True
    torch.cuda.empty_cache()
    return replaced
