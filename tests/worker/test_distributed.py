"""Multi-process training (torchrun, DDP) on the CPU: two gloo processes on a tiny random
Llama in float32, against the one-process engine and against themselves across a stop, a
resume and a crashed rank; the estimate for several GPUs; and, where two GPUs are, NCCL."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from app.services.jobs.estimates import DatasetLengths, estimate_for
from tests.worker.test_training_engine import RECORDS, Recorder, tiny_config
from tests.worker.test_training_resume import VALIDATION
from worker.spec.formatting import Sample
from worker.training import (
    TrainConfig,
    TrainingCancelled,
    TrainingError,
    TrainResult,
    distributed,
    engine,
)
from worker.training.checkpoints import latest_checkpoint
from worker.training.packing import share_tokens
from worker.training.ranks import CRASH_ENV

# 16 samples in batches of 3, two a step: 3 steps an epoch, the third of 4 samples (an uneven
# split over 2 processes); a cosine schedule with warm-up, the validation loss every 3 steps
# and a checkpoint every 2.
SETTINGS: dict[str, Any] = {
    "max_steps": 8,
    "batch_size": 3,
    "gradient_accumulation_steps": 2,
    "warmup_steps": 1,
    "lr_scheduler": "cosine",
    "dtype": "float32",
    "checkpoint_every": 2,
    "keep_checkpoints": 5,
    "eval_every": 3,
}


class Cancelling(Recorder):
    """A user's cancel after a number of steps: what was trained is checkpointed first."""

    def checkpoint_on_stop(self) -> bool:
        return True


def config(model_dir: Path) -> TrainConfig:
    return tiny_config(model_dir, **SETTINGS)


def run(
    train: Any,
    model_dir: Path,
    out: Path,
    *,
    recorder: Recorder | None = None,
    resume_from: Path | None = None,
) -> tuple[TrainResult, Recorder]:
    recorder = recorder or Recorder()
    result = train(
        config(model_dir),
        records=RECORDS,
        output_dir=out / "adapter",
        model_cache_dir=out / "cache",
        callbacks=recorder,
        validation_records=VALIDATION,
        checkpoint_dir=out.parent / "checkpoints",
        resume_from=resume_from,
    )
    return result, recorder


@pytest.fixture
def two_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(distributed.CPU_PROCESSES_ENV, "2")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def uninterrupted(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[TrainResult, Recorder]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(distributed.CPU_PROCESSES_ENV, "2")
        patch.setenv("OMP_NUM_THREADS", "1")
        return run(distributed.train, tiny_model_dir, tmp_path_factory.mktemp("two") / "run")


def assert_same_steps(
    steps: list[Any], reference: list[Any], *, tolerance: float, from_step: int = 1
) -> None:
    expected = {m.step: m for m in reference}
    assert [m.step for m in steps] == list(range(from_step, len(reference) + 1))
    for metrics in steps:
        ref = expected[metrics.step]
        assert math.isclose(metrics.loss, ref.loss, abs_tol=tolerance), metrics.step
        assert math.isclose(metrics.grad_norm, ref.grad_norm, abs_tol=tolerance), metrics.step
        assert metrics.learning_rate == pytest.approx(ref.learning_rate, abs=1e-12)
        assert (metrics.tokens, metrics.epoch) == (ref.tokens, ref.epoch), metrics.step
        if ref.val_loss is None:
            assert metrics.val_loss is None
        else:
            assert math.isclose(metrics.val_loss, ref.val_loss, abs_tol=tolerance), metrics.step


@pytest.mark.e2e  # torchrun and its processes: the end-to-end tier
def test_two_processes_repeat_the_one_process_run_step_for_step(
    tiny_model_dir: Path, tmp_path: Path, uninterrupted: tuple[TrainResult, Recorder]
) -> None:
    single, single_recorder = run(engine.train, tiny_model_dir, tmp_path / "one")
    double, recorder = uninterrupted
    assert_same_steps(recorder.steps, single_recorder.steps, tolerance=1e-4)
    assert (double.steps, double.tokens) == (single.steps, single.tokens)
    assert math.isclose(double.final_loss, single.final_loss, abs_tol=1e-4)
    # Rank 0 alone reported (each event once), wrote the adapter and the checkpoints.
    assert recorder.messages.count("Training started") == 1
    assert recorder.messages[0] == "Training in 2 CPU processes (DDP over gloo)"
    started = next(data for _, message, data in recorder.events if message == "Training started")
    assert started is not None and started["processes"] == 2
    assert (double.adapter_dir / "adapter_model.safetensors").is_file()
    names = {p.name for p in double.files}
    assert names == {p.name for p in single.files}
    checkpoints = double.adapter_dir.parent.parent / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        "checkpoint-2",
        "checkpoint-4",
        "checkpoint-6",
        "checkpoint-8",
    ]
    # Nothing left beside the adapter: the parent's folder for the ranks is gone.
    assert [p.name for p in double.adapter_dir.parent.iterdir()] == ["adapter"]


@pytest.mark.e2e  # torchrun and its processes: the end-to-end tier
@pytest.mark.usefixtures("two_processes")
def test_a_dead_rank_fails_the_run_and_resumed_runs_repeat_the_uninterrupted_one(
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    uninterrupted: tuple[TrainResult, Recorder],
) -> None:
    full, full_recorder = uninterrupted
    checkpoints = tmp_path / "checkpoints"

    # Rank 1 dies as step 3 starts: the run fails naming it, and nothing is left running.
    monkeypatch.setenv(CRASH_ENV, "1:3")
    crashed = Recorder()
    with pytest.raises(TrainingError) as raised:
        run(distributed.train, tiny_model_dir, tmp_path / "crash", recorder=crashed)
    message = str(raised.value)
    assert message.startswith("Training process 1 of 2 exited with code 3"), message
    assert crashed.events[-1] == ("error", message, {"rank": 1, "exit_code": 3})
    assert [m.step for m in crashed.steps] == [1, 2]
    assert latest_checkpoint(checkpoints) == checkpoints / "checkpoint-2"
    assert list((tmp_path / "crash").iterdir()) == []  # no adapter, nor half of one
    assert leftover_processes(tmp_path) == []
    monkeypatch.delenv(CRASH_ENV)

    # Re-queued, the job resumes from step 2; its user cancels it a few steps on: every
    # process stops after the same step, which is checkpointed first.
    monkeypatch.setattr(distributed, "_ASK_STOP_SECONDS", 0.0)
    cancelled = Cancelling(stop_after_steps=2)
    with pytest.raises(TrainingCancelled):
        run(
            distributed.train,
            tiny_model_dir,
            tmp_path / "second",
            recorder=cancelled,
            resume_from=checkpoints / "checkpoint-2",
        )
    reached = cancelled.steps[-1].step
    assert 4 <= reached < full.steps
    assert_same_steps(cancelled.steps, full_recorder.steps[:reached], tolerance=0, from_step=3)
    assert latest_checkpoint(checkpoints) == checkpoints / f"checkpoint-{reached}"
    assert leftover_processes(tmp_path) == []

    # Resumed again, it runs to the end: every step as the uninterrupted run had it.
    resumed, recorder = run(
        distributed.train,
        tiny_model_dir,
        tmp_path / "third",
        resume_from=checkpoints / f"checkpoint-{reached}",
    )
    assert_same_steps(recorder.steps, full_recorder.steps, tolerance=0, from_step=reached + 1)
    assert f"Resuming from the checkpoint of step {reached}" in recorder.messages
    assert (resumed.steps, resumed.final_loss) == (full.steps, full.final_loss)
    assert (resumed.best_step, resumed.best_val_loss) == (full.best_step, full.best_val_loss)


def leftover_processes(marker: Path) -> list[str]:
    """Processes whose command line names ``marker`` (torchrun and its ranks do)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(marker) in command:
            found.append(command)
    return found


def test_steps_are_shared_by_tokens() -> None:
    def sample(length: int) -> Sample:
        return Sample(input_ids=[1] * length, labels=[1] * length)

    samples = [sample(n) for n in (10, 70, 30, 40, 20, 60)]
    shares = share_tokens(samples, 2)
    assert [sum(len(s.input_ids) for s in share) for share in shares] == [120, 110]
    assert sorted(len(s.input_ids) for share in shares for s in share) == [10, 20, 30, 40, 60, 70]
    # More processes than samples: some shares are empty (they still join the all-reduce).
    assert [len(share) for share in share_tokens(samples[:1], 3)] == [1, 0, 0]


def test_process_count_follows_gpus_and_the_cpu_knob(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(distributed.CPU_PROCESSES_ENV, raising=False)
    assert distributed.process_count(tiny_config(tiny_model_dir)) == 1
    with pytest.raises(TrainingError, match="asks for 2 GPUs; this worker has no GPU"):
        distributed.process_count(tiny_config(tiny_model_dir, gpus=2))
    monkeypatch.setenv(distributed.CPU_PROCESSES_ENV, "4")
    assert distributed.process_count(tiny_config(tiny_model_dir)) == 4
    assert distributed.process_count(tiny_config(tiny_model_dir, gpus=2)) == 2
    assert distributed.process_count(tiny_config(tiny_model_dir, gpus=1)) == 1
    full = tiny_config(tiny_model_dir, method="full", lora_r="auto", lora_alpha="auto")
    assert (
        distributed.process_count(full) == 4
    )  # sharded (FSDP): tests/worker/test_distributed_fsdp.py
    assert TrainConfig(base_model="x", gpus=" Auto ").gpus == "auto"


def test_the_estimate_gives_memory_per_gpu_and_the_speed_up_of_several() -> None:
    dataset = DatasetLengths(20_000, 600.0, 1200.0, 0.5, "measured")

    def on(gpus: int | str, **settings: Any) -> dict[str, Any]:
        config = TrainConfig(base_model="llama-3.1-8b-instruct", gpus=gpus, **settings)
        return estimate_for(config, dataset=dataset, gpu_name="NVIDIA H100")

    one, two, eight = on(1), on(2), on(8)
    assert on("auto")["gpus"] == one["gpus"] == 1 and one["speed_up"] == 1.0
    assert (two["gpus"], eight["gpus"]) == (2, 8)
    # The same optimiser steps; each GPU holds the model and a share of each step.
    assert one["steps"] == two["steps"] == eight["steps"]
    assert two["memory_bytes"]["weights"] == one["memory_bytes"]["weights"]
    assert two["memory_bytes"]["ddp_gradient_buckets"] > 0
    assert eight["peak_memory_bytes"] <= two["peak_memory_bytes"] <= 1.1 * one["peak_memory_bytes"]
    # Faster, less than linearly: smaller passes per GPU and an all-reduce every step.
    assert 1.0 < two["speed_up"] <= 2.0 and two["speed_up"] < eight["speed_up"] <= 8.0
    assert eight["seconds"] < two["seconds"] < one["seconds"]
    said = [a for a in two["assumptions"] if a.startswith("On 2 GPUs")]
    assert said and f"{two['speed_up']:.1f}×" in said[0] and "not measured" in said[0]
    assert not any(a.startswith("On ") for a in one["assumptions"])
    # A small model's short steps keep two GPUs no busier than one: said so.
    few = DatasetLengths(500, 300.0, 600.0, 0.5, "measured")
    small = estimate_for(
        TrainConfig(base_model="qwen2.5-0.5b-instruct", gpus=2, batch_size=8),
        dataset=few,
        gpu_name="NVIDIA H100",
    )
    assert small["speed_up"] < 1.1
    assert any(w.startswith("2 GPUs are hardly faster than one") for w in small["warnings"])
    assert not any("hardly faster" in w for w in two["warnings"])


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs"
)
def test_two_gpus_under_nccl_repeat_one_gpu(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Not run yet (written on a machine without GPUs): the NCCL path of the test above."""
    runs = {}
    for gpus in (1, 2):
        recorder = Recorder()
        distributed.train(
            tiny_config(tiny_model_dir, **{**SETTINGS, "gpus": gpus}),
            records=RECORDS,
            output_dir=tmp_path / f"gpus-{gpus}" / "adapter",
            model_cache_dir=tmp_path / "cache",
            callbacks=recorder,
            validation_records=VALIDATION,
        )
        runs[gpus] = recorder
    assert any(m.startswith("Training on 2 GPUs") for m in runs[2].messages)
    assert_same_steps(runs[2].steps, runs[1].steps, tolerance=1e-3)
