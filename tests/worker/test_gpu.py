"""The engine on a CUDA GPU (skipped without one). Runs on a bare GPU host with only the
engine's own dependencies: `pytest --noconftest -m gpu tests/worker/test_gpu.py`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.factories_models import build_tiny_model
from worker.training import TrainConfig, train

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
    assert sum(recorder.losses[-5:]) < sum(recorder.losses[:5])
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
