"""The fused QLoRA linear: the same function as PEFT's 4-bit LoRA layer.

On the CPU, the fused function with a dequantising weight against the plain product (the
4-bit kernels are CUDA only). On the GPU (``gpu``), a tiny Llama quantised to NF4 by
bitsandbytes, with LoRA through PEFT's own 4-bit layer and through the fused one: outputs and
adapter gradients agree to bf16 rounding, and an engine run fuses every adapted 4-bit layer.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest
import torch

from worker.training import fused

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got - expected).norm() / expected.norm())


def test_the_fused_function_over_a_dequantised_weight_is_the_plain_product() -> None:
    torch.manual_seed(0)
    tokens, d_in, d_out, r = 37, 24, 40, 4
    weight = torch.randn(d_out, d_in, dtype=torch.float64)
    calls: list[int] = []

    def dequantize() -> torch.Tensor:
        calls.append(1)
        return weight

    x = torch.randn(2, tokens, d_in, dtype=torch.float64, requires_grad=True)
    a = torch.randn(r, d_in, dtype=torch.float64, requires_grad=True)
    b = torch.randn(d_out, r, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(d_out, dtype=torch.float64)
    out = fused._LoraLinear.apply(x, None, bias, a, b, 0.5, 0.0, dequantize)
    grad = torch.randn_like(out)
    out.backward(grad)
    got = (out.detach(), x.grad, a.grad, b.grad)
    assert len(calls) == 2  # once in forward, once in backward: nothing 16-bit kept

    x2, a2, b2 = (t.detach().clone().requires_grad_(True) for t in (x, a, b))
    expected = x2 @ weight.t() + bias + 0.5 * (x2 @ a2.t()) @ b2.t()
    expected.backward(grad)
    for g, e in zip(got, (expected.detach(), x2.grad, a2.grad, b2.grad), strict=True):
        assert g is not None and e is not None
        assert relative_error(g, e) < 1e-12


needs_gpu = pytest.mark.skipif(
    not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None,
    reason="needs CUDA and bitsandbytes",
)


def tiny_llama_4bit(dropout: float = 0.0) -> Any:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    from worker.training.fused_qlora import quantize_nf4

    config = LlamaConfig(
        vocab_size=5000,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    assert quantize_nf4(model) == 14
    lora = LoraConfig(
        r=8, lora_alpha=16, lora_dropout=dropout, target_modules=TARGETS, init_lora_weights=False
    )
    return get_peft_model(model, lora)


@pytest.mark.gpu
@needs_gpu
def test_fused_qlora_matches_peft_4bit_lora_on_the_gpu() -> None:
    model = tiny_llama_4bit()
    model.train()
    ids = torch.randint(0, 5000, (2, 96), device="cuda")

    def run() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        logits = model(input_ids=ids).logits.float()
        (logits * torch.linspace(-1, 1, logits.shape[-1], device="cuda")).sum().backward()
        grads = {
            n: p.grad.float().clone() for n, p in model.named_parameters() if p.grad is not None
        }
        return logits.detach(), grads

    reference, reference_grads = run()
    with fused.fused_modules(model) as report:
        assert report.qlora_linear == 14 and report.lora_linear == 0
        assert report.skipped_lora == []
        out, grads = run()
    # PEFT computes the LoRA branch in float32, the fused function in bf16: bf16 rounding.
    assert relative_error(out, reference) < 2e-2
    assert grads.keys() == reference_grads.keys() and len(grads) == 28
    worst = max(relative_error(grads[n], reference_grads[n]) for n in grads)
    assert worst < 3e-2


@pytest.mark.gpu
@needs_gpu
def test_an_engine_qlora_run_fuses_every_4bit_layer_and_learns() -> None:
    from tests.worker.test_training_speed import Recorder
    from worker.spec.config import TrainConfig
    from worker.spec.formatting import IGNORE_INDEX, Sample
    from worker.training import trainer

    model = tiny_llama_4bit().unload()  # the 4-bit base alone; the engine adds the adapter
    recorder = Recorder()
    config = TrainConfig(
        base_model="random 4-bit llama",
        method="qlora",
        max_steps=8,
        batch_size=4,
        gradient_accumulation_steps=2,
        learning_rate=5e-3,
        lora_r=8,
        lora_alpha=16,
        max_seq_length=128,
    )
    # A pattern to learn: each token is the one before plus 7 (mod 50); the answer is half.
    samples = []
    for i in range(64):
        n = 40 + 7 * (i % 9)
        ids = [3 + (i + 7 * j) % 50 for j in range(n)]
        samples.append(Sample(ids, [IGNORE_INDEX] * (n // 2) + ids[n // 2 :]))
    trainer.train_model(model, samples, config, pad_id=0, callbacks=recorder)
    started = recorder.started()
    assert started["fused_layers"] >= 14 + 5  # the 4-bit linears, the norms and the MLPs
    assert recorder.losses[-1] < recorder.losses[0] - 0.5
