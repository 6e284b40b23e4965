"""Full fine-tuning sharded across two gloo processes (FSDP2) on the CPU, on a tiny random
Llama in float32: against the one-process run, and resumed from its checkpoints in two
processes and in one; and the estimate of a sharded run."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

from app.services.jobs.estimates import DatasetLengths, estimate_for
from tests.worker.test_distributed import assert_same_steps
from tests.worker.test_training_engine import RECORDS, Recorder, tiny_config
from tests.worker.test_training_resume import VALIDATION
from worker.training import TrainConfig, TrainResult, distributed, engine
from worker.training.budget import SIMULATE_ENV

SETTINGS: dict[str, Any] = {
    "method": "full",
    "lora_r": "auto",
    "lora_alpha": "auto",
    "learning_rate": 1e-4,
    "max_steps": 4,
    "batch_size": 3,
    "gradient_accumulation_steps": 2,
    "warmup_steps": 1,
    "lr_scheduler": "cosine",
    "dtype": "float32",
    "checkpoint_every": 2,
    "keep_checkpoints": 3,
    "eval_every": 2,
}


def run(
    train: Any, model_dir: Path, out: Path, *, resume_from: Path | None = None, **overrides: Any
) -> tuple[TrainResult, Recorder]:
    recorder = Recorder()
    result = train(
        tiny_config(model_dir, **{**SETTINGS, **overrides}),
        records=RECORDS,
        output_dir=out / "model",
        model_cache_dir=out / "cache",
        callbacks=recorder,
        validation_records=VALIDATION,
        checkpoint_dir=out / "checkpoints",
        resume_from=resume_from,
    )
    return result, recorder


def two_processes(patch: pytest.MonkeyPatch) -> None:
    """distributed.train runs in two gloo processes of one thread each."""
    patch.setenv(distributed.CPU_PROCESSES_ENV, "2")
    patch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def sharded(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[TrainResult, Recorder]:
    with pytest.MonkeyPatch.context() as patch:
        two_processes(patch)
        return run(distributed.train, tiny_model_dir, tmp_path_factory.mktemp("sharded"))


@pytest.mark.e2e  # torchrun and its processes: the end-to-end tier
def test_sharded_full_fine_tuning_repeats_the_one_process_run(
    tiny_model_dir: Path, tmp_path: Path, sharded: tuple[TrainResult, Recorder]
) -> None:
    single, single_recorder = run(engine.train, tiny_model_dir, tmp_path)
    result, recorder = sharded
    assert_same_steps(recorder.steps, single_recorder.steps, tolerance=1e-4)
    started = next(data for _, message, data in recorder.events if message == "Training started")
    assert started is not None and started["processes"] == 2
    # The saved model is whole (gathered from both processes) and the one-process run's.
    assert {p.name for p in result.files} == {p.name for p in single.files}
    mine = load_file(str(result.adapter_dir / "model.safetensors"))
    theirs = load_file(str(single.adapter_dir / "model.safetensors"))
    assert mine.keys() == theirs.keys()
    for name, tensor in mine.items():
        assert tensor.shape == theirs[name].shape, name
        assert float((tensor - theirs[name]).abs().max()) < 1e-5, name


@pytest.mark.e2e  # torchrun and its processes: the end-to-end tier
def test_a_sharded_checkpoint_resumes_in_two_processes_and_in_one(
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sharded: tuple[TrainResult, Recorder],
) -> None:
    result, full_recorder = sharded
    checkpoint = result.adapter_dir.parent / "checkpoints" / "checkpoint-2"
    two_processes(monkeypatch)
    resumed, recorder = run(
        distributed.train, tiny_model_dir, tmp_path / "two", resume_from=checkpoint
    )
    assert_same_steps(recorder.steps, full_recorder.steps, tolerance=0, from_step=3)
    assert (resumed.steps, resumed.final_loss) == (result.steps, result.final_loss)
    # The checkpoint holds whole tensors: one process carries it on as well.
    alone, alone_recorder = run(
        engine.train, tiny_model_dir, tmp_path / "one", resume_from=checkpoint
    )
    assert_same_steps(alone_recorder.steps, full_recorder.steps, tolerance=1e-4, from_step=3)
    assert math.isclose(alone.final_loss, result.final_loss, abs_tol=1e-4)


@pytest.mark.e2e
def test_a_sharded_pass_that_does_not_fit_restarts_every_process_at_half_the_budget(
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sharded: tuple[TrainResult, Recorder],
) -> None:
    result, full_recorder = sharded
    checkpoint = result.adapter_dir.parent / "checkpoints" / "checkpoint-2"
    two_processes(monkeypatch)
    # Forced: a pass of more than 100 tokens runs out of memory as it starts. The first
    # launch's 4,096-token passes hold a process's whole share of a step, so step 3 fails in
    # one process while the other waits in the weights' all-gather.
    monkeypatch.setenv(SIMULATE_ENV, "100")
    resumed, recorder = run(
        distributed.train,
        tiny_model_dir,
        tmp_path,
        resume_from=checkpoint,
        micro_batch_tokens=4096,
    )
    halvings = [(m, d) for _, m, d in recorder.events if d and "previous_micro_batch_tokens" in d]
    assert halvings, recorder.events
    message, data = halvings[0]
    assert data["previous_micro_batch_tokens"] == 4096 and data["micro_batch_tokens"] <= 100
    assert "did not fit in GPU memory in training process" in message
    assert "every process restarted from its newest checkpoint (checkpoint-2)" in message
    # Steps the first launch finished after the checkpoint were trained again (a job's metric
    # points are overwritten, one per step). Every process then ran at the smaller budget:
    # the steps and the result of the run that never ran out (a step's gradient does not
    # depend on how it is cut into passes).
    last = {m.step: m for m in recorder.steps}
    assert_same_steps(sorted(last.values(), key=lambda m: m.step), full_recorder.steps,
                      tolerance=1e-4, from_step=3)  # fmt: skip
    assert resumed.steps == result.steps
    assert math.isclose(resumed.final_loss, result.final_loss, abs_tol=1e-4)
    # Nothing of the failed launch is left beside the model.
    assert not list((tmp_path).glob(".distributed-*"))


def test_the_estimate_shards_full_fine_tuning_across_gpus() -> None:
    dataset = DatasetLengths(20_000, 600.0, 1200.0, 0.5, "measured")

    def on(gpus: int) -> dict[str, Any]:
        config = TrainConfig(base_model="qwen2.5-1.5b-instruct", method="full", gpus=gpus)
        return estimate_for(config, dataset=dataset, gpu_name="NVIDIA H100")

    one, two, eight = on(1), on(2), on(8)
    params = one["model"]["params"]
    assert two["memory_bytes"]["optimizer"] == pytest.approx(one["memory_bytes"]["optimizer"] / 2)
    assert eight["memory_bytes"]["trainable"] == pytest.approx(one["memory_bytes"]["trainable"] / 8)
    assert (
        "gathered_layers" in two["memory_bytes"]
        and "ddp_gradient_buckets" not in two["memory_bytes"]
    )
    # Sharded layers are gathered in bf16: no autocast copy of every weight on every GPU.
    assert "autocast_weight_copies" in one["memory_bytes"]
    assert "autocast_weight_copies" not in two["memory_bytes"]
    assert two["memory_bytes"]["gathered_layers"] < 2 * params / 8
    assert eight["peak_memory_bytes"] < two["peak_memory_bytes"] < one["peak_memory_bytes"]
    # Each process loads the whole model (float32) before keeping its share.
    assert eight["peak_memory_bytes"] >= 4 * params
    assert any("sharded with FSDP" in a for a in two["assumptions"])


@pytest.mark.e2e
def test_a_sharded_bfloat16_run_trains_as_one_process_does(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One process keeps float32 weights and computes under bfloat16 autocast; sharded, each
    # layer's weights are gathered in bfloat16 (ranks.precision): the same run, to bfloat16's
    # rounding of the residual stream.
    _, single = run(engine.train, tiny_model_dir, tmp_path / "one", dtype="bfloat16")
    two_processes(monkeypatch)
    _, sharded = run(distributed.train, tiny_model_dir, tmp_path / "two", dtype="bfloat16")
    assert len(sharded.steps) == len(single.steps) == SETTINGS["max_steps"]
    for mine, theirs in zip(sharded.steps, single.steps, strict=True):
        assert math.isclose(mine.loss, theirs.loss, rel_tol=1e-3), mine.step


def test_sharded_layers_gather_their_weights_in_the_compute_dtype(tiny_model_dir: Path) -> None:
    import torch
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM

    from worker.training.ranks import decoder_layers, shard_layers

    seen: list[torch.dtype] = []
    dist.init_process_group("gloo", rank=0, world_size=1, store=dist.HashStore())
    try:
        for compute, gathered in ((torch.bfloat16, torch.bfloat16), (None, torch.float32)):
            model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
            shard_layers(model, compute)
            layer = decoder_layers(model)[0]
            proj = layer.self_attn.q_proj
            handle = proj.register_forward_pre_hook(lambda m, a: seen.append(m.weight.dtype))
            model(input_ids=torch.tensor([[3, 4, 5]]))
            handle.remove()
            assert seen[-1] == gathered
            # Resharded (as every layer is after its forward inside a sharded run), the
            # float32 masters are what the optimiser steps.
            layer.reshard()
            assert all(p.dtype == torch.float32 for p in layer.parameters())
    finally:
        dist.destroy_process_group()
