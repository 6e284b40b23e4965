"""The engine on a CUDA GPU (skipped without one). Runs on a bare GPU host with only the
engine's own dependencies: `pytest --noconftest -m gpu tests/worker/test_gpu.py`."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from tests.factories_models import build_tiny_model
from worker.training import TrainConfig, attention, fused, packing, train
from worker.training.formatting import IGNORE_INDEX, Sample
from worker.training.loss import linear_cross_entropy_sum

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


class Recorder:
    def __init__(self) -> None:
        self.losses: list[float] = []
        self.events: list[tuple[str, str, dict | None]] = []

    def on_event(self, level: str, message: str, data: dict | None = None) -> None:
        self.events.append((level, message, data))

    def on_step(self, metrics: object) -> None:
        self.losses.append(metrics.loss)  # type: ignore[attr-defined]

    def should_stop(self) -> bool:
        return False


def test_lora_trains_in_bf16_on_the_gpu(tmp_path: Path) -> None:
    model = build_tiny_model(tmp_path / "model")
    records = [
        {
            "messages": [
                {"role": "user", "content": f"Repeat {i % 4}"},
                {"role": "assistant", "content": f"{i % 4} {i % 4} {i % 4}"},
            ]
        }
        for i in range(32)
    ]
    recorder = Recorder()
    config = TrainConfig(
        base_model=str(model), max_steps=30, learning_rate=5e-3, batch_size=8, max_seq_length=64
    )
    result = train(
        config,
        records=records,
        output_dir=tmp_path / "adapter",
        model_cache_dir=tmp_path / "cache",
        callbacks=recorder,
    )
    loaded = next(
        data for _, message, data in recorder.events if message.startswith("Model loaded")
    )
    assert loaded is not None and loaded["device"].startswith("cuda")
    assert loaded["dtype"] == "bfloat16"
    started = next(data for _, message, data in recorder.events if message == "Training started")
    assert started is not None and started["packing"] is True
    assert started["gradient_checkpointing"] is False and started["fused_layers"] > 0
    assert sum(recorder.losses[-5:]) < sum(recorder.losses[:5])
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got.float() - expected.float()).norm() / expected.float().norm())


def test_varlen_flash_attention_matches_attention_run_per_sample() -> None:
    torch.manual_seed(0)
    lengths = [1, 37, 300, 5, 128, 77]
    total, heads, kv_heads, dim = sum(lengths), 8, 2, 64
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    cu = cu.cuda()

    def inputs() -> list[torch.Tensor]:
        return [
            torch.randn(total, h, dim, device="cuda", dtype=torch.bfloat16, requires_grad=True)
            for h in (heads, kv_heads, kv_heads)
        ]

    q, k, v = inputs()
    out = attention._VarlenFlash.apply(q, k, v, cu, max(lengths), 0.0, dim**-0.5)
    grad = torch.randn_like(out)
    out.backward(grad)
    rq, rk, rv = (t.detach().float().requires_grad_(True) for t in (q, k, v))
    ref = attention._per_sample_sdpa(rq, rk, rv, cu.cpu(), 0.0, dim**-0.5)
    ref.backward(grad.float())
    assert relative_error(out, ref) < 1e-2
    for got, expected in ((q, rq), (k, rk), (v, rv)):
        assert got.grad is not None and expected.grad is not None
        assert relative_error(got.grad, expected.grad) < 2e-2


def test_packed_bf16_loss_and_gradients_match_padded_batches() -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=1000,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
    )
    with torch.device("cuda"):
        base = LlamaForCausalLM(config).bfloat16()
    lora = LoraConfig(
        r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        target_modules=[
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
        init_lora_weights=False,
    )
    model = get_peft_model(base, lora)
    lm: Any = model.get_base_model()
    rng = random.Random(0)
    samples = []
    for n in (3, 200, 41, 513, 7, 96):
        ids = [rng.randrange(1, 1000) for _ in range(n)]
        samples.append(Sample(ids, [IGNORE_INDEX if i < n // 3 else t for i, t in enumerate(ids)]))

    padded = packing.collate_padded(samples, pad_id=0).to(torch.device("cuda"))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = lm(input_ids=padded.input_ids, attention_mask=padded.attention_mask).logits
    picked = logits.flatten(0, 1).index_select(0, padded.label_positions).float()
    reference = F.cross_entropy(picked, padded.label_targets, reduction="sum")
    reference.backward()
    reference_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)

    row = packing.collate_packed(samples).to(torch.device("cuda"))
    with fused.fused_modules(model), attention.packed_attention(lm):
        hidden = lm.get_decoder()(
            input_ids=row.input_ids,
            position_ids=row.position_ids,
            cu_seq_lens_q=row.cu_seq_lens,
            cu_seq_lens_k=row.cu_seq_lens,
            max_length_q=row.max_length,
            max_length_k=row.max_length,
        ).last_hidden_state
        picked_hidden = hidden.flatten(0, 1).index_select(0, row.label_positions)
        total = linear_cross_entropy_sum(
            picked_hidden, lm.get_output_embeddings().weight, row.label_targets
        )
        total.backward()
    assert abs(float(total) - float(reference)) / float(reference) < 5e-3
    for name, expected in reference_grads.items():
        got = dict(model.named_parameters())[name].grad
        assert got is not None and relative_error(got, expected) < 5e-2, name
