"""Issue 21: the CPU path, chosen automatically when the worker has no CUDA. What it chooses
(bfloat16 where the processor computes it, packed passes of a laptop's size, the fused
layers, one thread per physical core) and that a run on it learns and repeats itself; the
CPU calibration the estimates use. Speed and memory are measured by bench/cpu_train.py."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from tests.worker.test_training_speed import run_train
from worker.spec.catalog import catalog_entry
from worker.spec.config import TrainConfig
from worker.spec.cpu_time import ASSUMED, read_calibration, write_calibration
from worker.spec.estimate import estimate, gpu_spec
from worker.training import cpu, models

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path is for CPUs")


def test_bf16_is_chosen_where_the_processor_has_it_and_float32_elsewhere(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNELAB_CPU_BF16", "1")
    fast = run_train(tiny_model_dir, tmp_path, "bf16", max_steps=12).started()
    assert fast["compute_dtype"] == "bfloat16" and fast["device"] == "cpu"
    assert fast["packing"] is True and fast["fused_layers"] > 0
    assert fast["micro_batch_tokens"] == cpu.CPU_TOKEN_BUDGET
    assert fast["cpu_threads"] >= 1
    monkeypatch.setenv("TUNELAB_CPU_BF16", "0")
    plain = run_train(tiny_model_dir, tmp_path, "fp32", max_steps=2).started()
    assert plain["compute_dtype"] == "float32"
    # An explicit dtype wins over the processor's.
    monkeypatch.setenv("TUNELAB_CPU_BF16", "1")
    explicit = run_train(tiny_model_dir, tmp_path, "explicit", max_steps=2, dtype="float32")
    assert explicit.started()["compute_dtype"] == "float32"


def test_a_bf16_cpu_run_learns_and_repeats_exactly(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNELAB_CPU_BF16", "1")
    settings = {"max_steps": 12, "lora_dropout": 0.1, "seed": 3}
    first = run_train(tiny_model_dir, tmp_path, "first", **settings)
    second = run_train(tiny_model_dir, tmp_path, "second", **settings)
    assert first.losses == second.losses
    assert sum(first.losses[-3:]) / 3 < sum(first.losses[:3]) / 3 - 0.5


def test_full_fine_tuning_keeps_float32_weights_and_computes_in_bf16(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TUNELAB_CPU_BF16", "1")
    device = torch.device("cpu")
    lora = TrainConfig(base_model="m", method="lora")
    full = TrainConfig(base_model="m", method="full")
    assert models.training_dtype(lora, device) == torch.bfloat16
    assert models.training_dtype(full, device) == torch.float32
    assert models.compute_dtype(full, device) == torch.bfloat16
    monkeypatch.setenv("TUNELAB_CPU_BF16", "0")
    assert models.training_dtype(lora, device) == torch.float32


def test_threads_follow_the_physical_cores_unless_omp_num_threads_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        assert cpu.configure_threads() == cpu.physical_cores()
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        assert cpu.configure_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_the_calibration_is_written_read_back_and_scales_the_cpu_estimate(
    tmp_path: Path,
) -> None:
    measured = cpu.calibrate(seconds=0.1)
    assert measured["matmul_gflops"] > 0 and measured["threads"] >= 1
    write_calibration(tmp_path, measured)
    calibration = read_calibration(tmp_path)
    assert calibration is not None and calibration.matmul_gflops == measured["matmul_gflops"]
    assert read_calibration(tmp_path / "none") is None

    entry = catalog_entry("smollm2-135m-instruct")
    assert entry is not None
    config = TrainConfig(base_model="smollm2-135m-instruct", method="lora")
    args = {"dataset_records": 500, "mean_tokens": 300.0, "p95_tokens": 450.0}
    on_cpu = estimate(config, entry.arch, gpu=gpu_spec(None), cpu=calibration, **args)
    slower = estimate(config, entry.arch, gpu=gpu_spec(None), cpu=ASSUMED, **args)
    on_gpu = estimate(config, entry.arch, gpu=gpu_spec(None), **args)
    assert on_cpu.breakdown["cpu"]["matmul_gflops"] == calibration.matmul_gflops
    # The CPU rules: one pass (500 samples, 16 per step), not the GPU's three.
    assert on_cpu.breakdown["steps"] * 3 == on_gpu.breakdown["steps"]
    training = on_cpu.breakdown["seconds"]["training"]
    assert training == pytest.approx(
        slower.breakdown["seconds"]["training"] * ASSUMED.matmul_gflops / calibration.matmul_gflops,
        rel=0.01,
    )
    assert on_gpu.breakdown["seconds"]["training"] < training


def test_a_cpu_worker_records_its_measurement_where_the_web_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.core.config import get_settings
    from worker.tasks.calibration import measure_and_record

    monkeypatch.setattr(get_settings(), "data_dir", tmp_path)
    measured = measure_and_record()
    assert measured is not None
    calibration = read_calibration(tmp_path)
    assert calibration is not None and calibration.measured_at
    assert calibration.matmul_gflops == measured["matmul_gflops"]


def test_cpu_passes_come_in_a_few_lengths_and_train_as_unpadded_ones(tiny_model_dir: Path) -> None:
    """Packed passes on a CPU are padded to a multiple of CPU_ROW_MULTIPLE tokens (oneDNN
    keeps kernels per shape: any length made hundreds, and the memory grew each step); the
    filler predicts nothing, so the loss and the gradients are the unpadded ones."""
    import dataclasses

    from tests.worker.test_compiled import _step
    from tests.worker.test_training_speed import lora_model, make_samples
    from worker.training import attention, fused
    from worker.training.steps import micro_batches, plan_steps

    model = lora_model(tiny_model_dir)
    lm = model.get_base_model()
    samples = make_samples([5, 17, 9, 30, 70, 3])
    plan = dataclasses.replace(
        plan_steps(lm, samples, TrainConfig(base_model="m")), token_budget=64
    )
    assert plan.row_multiple == cpu.CPU_ROW_MULTIPLE
    rows = micro_batches([samples], plan, pad_id=0)
    assert all(row.input_ids.shape[1] % cpu.CPU_ROW_MULTIPLE == 0 for row in rows)
    assert sum(row.tokens for row in rows) == 134  # the real tokens alone are counted
    unpadded = dataclasses.replace(plan, row_multiple=None)
    assert {row.input_ids.shape[1] for row in micro_batches([samples], unpadded, pad_id=0)} != {
        row.input_ids.shape[1] for row in rows
    }
    with fused.fused_modules(model), attention.packed_attention(lm):
        expected_loss, expected_grads = _step(model, unpadded, samples)
        loss, grads = _step(model, plan, samples)
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    for name, grad in expected_grads.items():
        assert float((grads[name] - grad).norm()) <= 1e-5 * (float(grad.norm()) or 1.0), name


def test_large_blocks_are_allocated_with_mmap_on_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    assert cpu.limit_heap_growth() == cpu.MMAP_THRESHOLD
    monkeypatch.setenv("TUNELAB_CPU_MMAP_THRESHOLD", "0")
    assert cpu.limit_heap_growth() is None
    # Back to glibc's own default (128 KiB; the dynamic threshold stays off after mallopt).
    monkeypatch.setenv("TUNELAB_CPU_MMAP_THRESHOLD", str(128 * 1024))
    assert cpu.limit_heap_growth() == 128 * 1024


def test_cpu_attention_runs_each_sample_padded_to_a_few_lengths_with_unpadded_results() -> None:
    """Each sample's attention reaches the CPU kernel padded to a multiple of
    CPU_ATTENTION_MULTIPLE tokens: the kernel compiles a matrix product for every block shape
    a sample's length makes (oneDNN keeps each, about a megabyte with AMX), so lengths as they
    come grew the memory step after step. The zeros after a sample change nothing under the
    causal mask: outputs and gradients equal one SDPA call per unpadded sample."""
    import torch.nn.functional as F
    from torch.utils._python_dispatch import TorchDispatchMode

    from worker.training import attention

    seen: list[int] = []

    class Lengths(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            if "scaled_dot_product" in func.__name__ and "backward" not in func.__name__:
                seen.append(args[0].shape[2])
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    lengths = [5, 64, 70, 1, 131]
    heads, kv_heads, dim = 4, 2, 16
    total = sum(lengths)
    q = torch.randn(total, heads, dim, dtype=torch.float64, requires_grad=True)
    k = torch.randn(total, kv_heads, dim, dtype=torch.float64, requires_grad=True)
    v = torch.randn(total, kv_heads, dim, dtype=torch.float64, requires_grad=True)
    cu = torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int32)

    with Lengths():
        out = attention._per_sample_sdpa(q, k, v, cu, 0.0, dim**-0.5)
    assert seen == [64, 64, 128, 64, 192]
    upstream = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), upstream)

    expected = []
    for start, end in itertools.pairwise(cu.tolist()):
        parts = [t[start:end].transpose(0, 1).unsqueeze(0) for t in (q, k, v)]
        parts[1] = parts[1].repeat_interleave(2, dim=1)
        parts[2] = parts[2].repeat_interleave(2, dim=1)
        part = F.scaled_dot_product_attention(*parts, is_causal=True, scale=dim**-0.5)
        expected.append(part[0].transpose(0, 1))
    reference = torch.cat(expected)
    assert torch.allclose(out, reference, atol=1e-12)
    for mine, theirs in zip(got, torch.autograd.grad(reference, (q, k, v), upstream), strict=True):
        assert torch.allclose(mine, theirs, atol=1e-12)
