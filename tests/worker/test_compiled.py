"""Regional compilation of the decoder layers (worker.training.compiled): the row lengths it
pads to, when a run compiles, the filler's effect on the loss (none), and a compiled tiny
model's loss and gradients against eager ones on a CPU (torch.compile needs a C compiler
there; skipped without one)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from tests.worker.test_training_speed import lora_grads, lora_model, make_samples
from worker.spec.config import TrainConfig
from worker.spec.formatting import IGNORE_INDEX, Sample
from worker.training import attention, compiled, cpu, fused, mask_bits, packing
from worker.training.steps import (
    StepPlan,
    micro_batch_loss,
    micro_batches,
    plan_steps,
    run_tokens,
)


def test_rows_are_padded_to_a_few_lengths_at_most_a_quarter_longer() -> None:
    assert packing.bucket_length(1) == 256
    assert packing.bucket_length(256) == 256
    assert packing.bucket_length(5000) == 5120
    assert packing.bucket_length(8192) == 8192
    assert packing.bucket_length(8193) == 10240
    lengths = {packing.bucket_length(n) for n in range(4097, 8193)}
    assert lengths == {5120, 6144, 7168, 8192}  # four per doubling
    for n in range(1, 40000, 7):
        bucket = packing.bucket_length(n)
        assert n <= bucket
        assert bucket < max(256, n) * 1.25 + 1


def test_a_padded_row_keeps_the_real_tokens_labels_and_boundaries() -> None:
    samples = make_samples([5, 17, 9])
    plain = packing.collate_packed(samples)
    padded = packing.collate_packed(samples, pad_to=40)
    assert padded.input_ids.shape == (1, 40)
    assert padded.tokens == plain.tokens == 31
    assert padded.cu_seq_lens.tolist() == [0, 5, 22, 31, 40]  # the filler is its own segment
    assert padded.position_ids[0, 31:].tolist() == list(range(9))
    assert torch.equal(padded.label_positions, plain.label_positions)
    assert torch.equal(padded.label_targets, plain.label_targets)
    assert packing.collate_packed(samples, pad_to=31).cu_seq_lens.tolist() == [0, 5, 22, 31]


def test_the_switch_and_the_automatic_choice(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lm = lora_model(tiny_model_dir).get_base_model()
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.delenv(compiled.MODE_ENV, raising=False)
    assert compiled.setting() == "auto"
    assert compiled.decide(lm, cpu, packed=True, checkpointing=False) == (
        False,
        "not on a CUDA GPU",
    )
    # The device is only looked at, never used. Tiny layers (like Qwen2.5-0.5B's) stay eager.
    chosen, why = compiled.decide(lm, cuda, packed=True, checkpointing=False)
    assert not chosen and "ran no faster compiled" in why
    # Llama-3.2-1B's layers (61M weights) compile on CUDA, for runs long enough to repay it.
    config_type = type(lm.config)
    one_b = config_type(hidden_size=2048, intermediate_size=8192, num_key_value_heads=8)
    monkeypatch.setattr(lm, "config", one_b)
    assert compiled.decide(lm, cuda, packed=True, checkpointing=False)[0]
    assert compiled.decide(lm, cuda, packed=True, checkpointing=False, run_tokens=4e7)[0]
    chosen, why = compiled.decide(lm, cuda, packed=True, checkpointing=False, run_tokens=2e6)
    assert not chosen and "too short to repay the compile time" in why
    assert not compiled.decide(lm, cuda, packed=False, checkpointing=False)[0]
    assert not compiled.decide(lm, cuda, packed=True, checkpointing=True)[0]
    big = config_type(hidden_size=4096, intermediate_size=14336, num_key_value_heads=8)
    monkeypatch.setattr(lm, "config", big)
    chosen, why = compiled.decide(lm, cuda, packed=True, checkpointing=False)
    assert not chosen and "keep the GPU busy" in why
    monkeypatch.setenv(compiled.MODE_ENV, "off")
    assert compiled.decide(lm, cuda, packed=True, checkpointing=False) == (
        False,
        "TUNELAB_COMPILE=off",
    )
    monkeypatch.setenv(compiled.MODE_ENV, "on")
    assert compiled.decide(lm, cpu, packed=True, checkpointing=False)[0]
    assert compiled.decide(lm, cuda, packed=True, checkpointing=False, run_tokens=1e3)[0]
    monkeypatch.setenv(compiled.MODE_ENV, "nonsense")
    assert compiled.setting() == "auto"


def test_a_cpu_run_plans_no_compilation_by_default(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(compiled.MODE_ENV, raising=False)
    lm = lora_model(tiny_model_dir).get_base_model()
    config = TrainConfig(base_model="tiny", max_steps=1, batch_size=2)
    plan = plan_steps(lm, make_samples([5, 9]), config)
    assert plan.packed and not plan.compiled
    assert plan.compile_note == "not on a CUDA GPU"
    # The run's tokens, for auto on a GPU: steps x samples per step x mean length, or epochs.
    two = make_samples([5, 9])
    assert run_tokens(two, config) is None  # accumulation still auto
    by_steps = TrainConfig(base_model="t", max_steps=3, batch_size=2, gradient_accumulation_steps=2)
    assert run_tokens(two, by_steps) == 7 * 2 * 2 * 3
    assert run_tokens(two, TrainConfig(base_model="t", epochs=3, batch_size=2)) == 3 * 14
    rows = micro_batches([make_samples([5, 9])], plan, pad_id=0)
    # Not padded to a compile bucket (256 at least), only to the CPU path's row multiple.
    assert [r.input_ids.shape[1] for r in rows] == [cpu.CPU_ROW_MULTIPLE]


def test_the_cache_folder_is_under_the_data_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("TUNELAB_DATA_DIR", str(tmp_path))
    assert compiled.cache_dir() == tmp_path / "compile-cache"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert compiled.cache_dir() == tmp_path / "elsewhere"


def _step(model: Any, plan: StepPlan, samples: list) -> tuple[float, dict[str, torch.Tensor]]:
    lm = model.get_base_model()
    model.zero_grad(set_to_none=True)
    total = torch.zeros(())
    for batch in micro_batches([samples], plan, pad_id=0):
        loss = micro_batch_loss(lm, batch, plan)
        loss.backward()
        total += loss.detach()
    return float(total), lora_grads(model)


@pytest.mark.e2e  # a C compiler at work for 10-30 s: the end-to-end tier
@pytest.mark.skipif(shutil.which("cc") is None, reason="torch.compile needs a C compiler")
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compiled_layers_give_the_eager_loss_and_gradients_on_a_cpu(
    mode: str, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Default: rows as they are, compiled once for any length (dynamic shapes).
    reduce-overhead (CUDA graphs on a GPU; none on a CPU): rows padded to fixed lengths."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv(compiled.COMPILE_MODE_ENV, mode)
    model = lora_model(tiny_model_dir)
    lm = model.get_base_model()
    steps = [make_samples([5, 17, 9, 30]), make_samples([12, 40, 3], seed=1)]
    eager = StepPlan(packed=True, token_budget=256, checkpointing=False, fused_head=True, note="")
    plan = dataclasses.replace(eager, compiled=True)
    rows = micro_batches([steps[0]], plan, pad_id=0)
    assert rows[0].input_ids.shape[1] == (256 if mode == "reduce-overhead" else 61)
    with fused.fused_modules(model), attention.packed_attention(lm):
        expected = [_step(model, eager, samples) for samples in steps]
        torch._dynamo.reset()
        counters.clear()
        with compiled.compiled_layers(lm) as layers:
            assert layers == 2
            got = [_step(model, plan, samples) for samples in steps]
            graphs = counters["stats"]["unique_graphs"]
            again = _step(model, plan, steps[0])  # compiled code, reused
            assert counters["stats"]["unique_graphs"] == graphs
    assert graphs > 0  # compiled, not run eagerly after an error
    assert lm.get_decoder().layers[0]._compiled_call_impl is None  # eager again after
    assert again[0] == pytest.approx(got[0][0], rel=1e-6)
    for (expected_loss, expected_grads), (loss, grads) in zip(expected, got, strict=True):
        assert loss == pytest.approx(expected_loss, rel=1e-4)
        assert expected_grads.keys() == grads.keys()
        for name, grad in expected_grads.items():
            scale = float(grad.norm()) or 1.0
            assert float((grads[name] - grad).norm()) / scale < 1e-3, name
    assert any((tmp_path / "cache").iterdir())


@pytest.mark.e2e  # a C compiler at work: the end-to-end tier
@pytest.mark.skipif(shutil.which("cc") is None, reason="torch.compile needs a C compiler")
def test_a_packed_dropout_mask_unpacks_inside_a_compiled_function_on_a_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Wide inputs keep their masks packed (mask_bits); a compiled layer unpacks them in its
    own code, where the eager path's bytes-as-bool view does not compile on a CPU."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache"))
    mask = torch.rand(16, 2048, generator=torch.Generator().manual_seed(0)) > 0.3
    packed = mask_bits.pack_mask(mask)
    x = torch.randn(16, 2048)
    torch._dynamo.reset()
    dropped = torch.compile(lambda p, t: t * mask_bits.unpack_mask(p).to(t.dtype))(packed, x)
    assert torch.equal(dropped, x * mask.to(x.dtype))
    assert torch.equal(mask_bits.unpack_mask(packed), mask)


@pytest.mark.e2e  # a C compiler at work for 10-30 s: the end-to-end tier
@pytest.mark.skipif(shutil.which("cc") is None, reason="torch.compile needs a C compiler")
def test_the_engine_compiles_when_switched_on_and_trains_as_it_does_eagerly(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TUNELAB_COMPILE=on through the whole engine on a CPU: the event says so, the loss
    curve (validation included) is the eager one, and the layers are eager again after."""
    from tests.worker.test_training_speed import Recorder
    from worker.training import trainer

    class Curves(Recorder):
        def on_step(self, metrics: Any) -> None:
            super().on_step(metrics)
            if metrics.val_loss is not None:
                self.val_losses.append(metrics.val_loss)

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache"))
    config = TrainConfig(
        base_model="tiny",
        max_steps=3,
        batch_size=4,
        learning_rate=1e-2,
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        micro_batch_tokens=64,  # several rows of different lengths per step
        eval_every=3,
    )
    samples = make_samples([5, 17, 9, 30, 12, 40, 3, 22, 8, 16, 27, 11])
    runs = {}
    for mode in ("off", "on"):
        monkeypatch.setenv(compiled.MODE_ENV, mode)
        torch._dynamo.reset()
        counters.clear()
        recorder = Curves()
        recorder.val_losses = []
        model = lora_model(tiny_model_dir).unload()
        trainer.train_model(
            model,
            samples,
            config,
            pad_id=0,
            callbacks=recorder,
            validation_samples=make_samples([7, 19], seed=3),
        )
        runs[mode] = recorder
        assert all(layer._compiled_call_impl is None for layer in model.model.layers)
        if mode == "on":
            assert counters["stats"]["unique_graphs"] > 0  # compiled, not eager after an error
    compiling = [d for m, d in runs["on"].events if m.startswith("Compiling")]
    assert compiling and compiling[0]["compiled_layers"] == 2
    assert not any(m.startswith("Compiling") for m, _ in runs["off"].events)
    assert runs["on"].losses == pytest.approx(runs["off"].losses, rel=1e-4)
    assert len(runs["on"].val_losses) == 1
    assert runs["on"].val_losses == pytest.approx(runs["off"].val_losses, rel=1e-4)


# --- On a CUDA GPU (skipped without one) ---------------------------------------------------


def cuda_llama() -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=8192,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    with torch.device("cuda"):
        return LlamaForCausalLM(config).to(torch.bfloat16)


def pattern_samples(count: int) -> list[Sample]:
    """Samples of 11 lengths (30 to 400 tokens) whose second half repeats a pattern."""
    samples = []
    for i in range(count):
        n = 30 + 37 * (i % 11)
        ids = [3 + (i + 7 * j) % 50 for j in range(n)]
        samples.append(Sample(ids, [IGNORE_INDEX] * (n // 2) + ids[n // 2 :]))
    return samples


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_small_lora_run_compiles_its_layers_on_the_gpu_and_trains_as_eager(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.worker.test_training_speed import Recorder
    from worker.training import trainer

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache"))
    config = TrainConfig(
        base_model="random small llama",
        max_steps=6,
        batch_size=8,
        gradient_accumulation_steps=2,
        learning_rate=2e-3,
        lora_r=8,
        lora_alpha=16,
        lora_dropout=0.0,  # the same masks are not drawn compiled and eager
        max_seq_length=512,
    )
    # A pattern to learn, in rows of changing length (a new packed length every step).
    samples = pattern_samples(96)
    runs = {}
    # "on": auto leaves layers this small, and runs this short, eager (see decide).
    for mode in ("off", "on"):
        monkeypatch.setenv(compiled.MODE_ENV, mode)
        torch._dynamo.reset()
        counters.clear()
        recorder = Recorder()
        trainer.train_model(cuda_llama(), samples, config, pad_id=0, callbacks=recorder)
        runs[mode] = recorder
    compiling = [d for m, d in runs["on"].events if m.startswith("Compiling")]
    assert compiling and compiling[0]["compiled_layers"] == 4
    assert not any(m.startswith("Compiling") for m, _ in runs["off"].events)
    assert counters["stats"]["unique_graphs"] > 0
    eager, fast = runs["off"].losses, runs["on"].losses
    assert fast[-1] < fast[0]
    for a, b in zip(eager, fast, strict=True):
        assert b == pytest.approx(a, rel=2e-2)  # bf16 rounding
