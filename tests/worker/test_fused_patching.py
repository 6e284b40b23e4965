"""Installing and undoing the fused forwards on any transformers version: what a module held
before comes back, no module is patched twice, a forward another library swapped in while
training ran is left alone, and training keeps its fused layers through train()/eval()."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.factories import QA, chat
from tests.worker.test_training_speed import lora_model
from worker.training import TrainConfig, fused, train


def patched_forwards(model: Any) -> list[str]:
    return [name for name, module in model.named_modules() if "forward" in vars(module)]


def test_leaving_restores_a_forward_another_library_had_installed(tiny_model_dir: Path) -> None:
    model = lora_model(tiny_model_dir)
    norm = model.get_base_model().model.norm

    def wrapper(hidden: torch.Tensor) -> torch.Tensor:  # e.g. a hook a profiler installs
        return type(norm).forward(norm, hidden)

    norm.forward = wrapper
    with fused.fused_modules(model) as report:
        assert report.rms_norm == 5
        assert vars(norm)["forward"] is not wrapper
    assert vars(norm)["forward"] is wrapper
    assert patched_forwards(model) == ["base_model.model.model.norm"]


def test_no_module_is_patched_twice(tiny_model_dir: Path) -> None:
    model = lora_model(tiny_model_dir)
    with fused.fused_modules(model) as outer:
        installed = {
            name: vars(m)["forward"] for name, m in model.named_modules() if "forward" in vars(m)
        }
        with fused.fused_modules(model) as inner:
            assert inner.fused == 0
        # The inner block undid nothing of the outer one's.
        assert {
            n: vars(m)["forward"] for n, m in model.named_modules() if "forward" in vars(m)
        } == installed
        assert outer.fused == len(installed) == 21
        assert outer.lost() == 0
    assert patched_forwards(model) == []


def test_a_forward_swapped_in_meanwhile_is_left_alone(tiny_model_dir: Path) -> None:
    """What transformers' kernelize does on train() (5.2x): it pops the instance forward."""
    model = lora_model(tiny_model_dir)
    norm = model.get_base_model().model.norm
    with fused.fused_modules(model) as report:
        vars(norm).pop("forward")
        assert report.lost() == 1
    assert patched_forwards(model) == []  # and leaving raised nothing


def test_training_keeps_its_fused_layers_with_hub_kernels_on(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """transformers' default since 5.2x: models load with hub kernels on, and every train() or
    eval() (validation runs both) re-kernelises. The run must still end well, fused."""
    monkeypatch.setenv("USE_HUB_KERNELS", "YES")
    events: list[tuple[str, str, dict[str, Any] | None]] = []

    class Recorder:
        def on_event(self, level: str, message: str, data: dict[str, Any] | None = None) -> None:
            events.append((level, message, data))

        def on_step(self, metrics: Any) -> None:
            pass

        def should_stop(self) -> bool:
            return False

    records = [chat(q, a) for q, a in QA] * 2
    config = TrainConfig(
        base_model=str(tiny_model_dir), max_steps=4, batch_size=4, eval_every=2, lora_r=4
    )
    result = train(
        config,
        records=records,
        validation_records=records[:4],
        output_dir=tmp_path / "adapter",
        model_cache_dir=tmp_path / "cache",
        callbacks=Recorder(),
    )
    assert result.steps == 4
    started = next(data for _, message, data in events if message == "Training started")
    assert started is not None and started["fused_layers"] == 21
    assert [m for level, m, _ in events if level == "warning"] == []


def test_a_model_loaded_by_transformers_trains_after_it_was_fused(tiny_model_dir: Path) -> None:
    """The model object is usable as transformers made it once the block is left."""
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    ids = torch.randint(3, 5000, (1, 9))
    before = model(input_ids=ids).logits
    with fused.fused_modules(model):
        model.train()
        model.eval()
    model.train()
    model.eval()
    assert torch.allclose(model(input_ids=ids).logits, before)
