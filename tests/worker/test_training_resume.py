"""Checkpoints, resume, validation loss, early stopping and live progress, on a tiny model."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from pydantic import ValidationError
from safetensors.torch import load_file

from app.cli.train import run_config_file
from tests.factories import alpaca_records, jsonl
from tests.worker.test_training_engine import RECORDS, Recorder, chat, tiny_config
from worker.training import TrainConfig, TrainingCancelled, TrainingError, TrainResult, train
from worker.training.checkpoints import (
    IncompatibleCheckpoint,
    latest_checkpoint,
    list_checkpoints,
)

VALIDATION = [
    chat("What colour is grass?", "Green."),
    chat("What is three plus three?", "Six."),
    chat("What is the capital of Italy?", "Rome."),
]

# 16 samples in batches of 3 make 6 batches an epoch (the last holds one sample); two batches
# a step make 3 steps an epoch. Checkpoints every 2 steps fall mid-epoch as well as at the
# boundary, and dropout draws from the RNG, so a resume must restore the data position, the
# optimiser, the scheduler and the random state to repeat the run.
RESUMABLE = {
    "max_steps": 10,
    "batch_size": 3,
    "gradient_accumulation_steps": 2,
    "lora_dropout": 0.1,
    "warmup_steps": 2,
    "lr_scheduler": "cosine",
    "checkpoint_every": 2,
    "keep_checkpoints": 3,
    "eval_every": 3,
}


def run(
    config: TrainConfig,
    out: Path,
    *,
    recorder: Recorder | None = None,
    validation: list[dict[str, Any]] | None = None,
    checkpoints: Path | None = None,
    resume_from: Path | None = None,
) -> tuple[TrainResult, Recorder]:
    recorder = recorder or Recorder()
    result = train(
        config,
        records=RECORDS,
        output_dir=out,
        model_cache_dir=out.parent / "cache",
        callbacks=recorder,
        validation_records=validation,
        checkpoint_dir=checkpoints,
        resume_from=resume_from,
    )
    return result, recorder


@pytest.fixture(scope="module")
def uninterrupted(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[TrainResult, Recorder]:
    tmp = tmp_path_factory.mktemp("uninterrupted")
    config = tiny_config(tiny_model_dir, **RESUMABLE)
    return run(config, tmp / "adapter", validation=VALIDATION, checkpoints=tmp / "checkpoints")


def test_a_resumed_run_repeats_the_uninterrupted_run_step_by_step(
    tiny_model_dir: Path, tmp_path: Path, uninterrupted: tuple[TrainResult, Recorder]
) -> None:
    config = tiny_config(tiny_model_dir, **RESUMABLE)
    checkpoints = tmp_path / "checkpoints"
    with pytest.raises(TrainingCancelled):
        run(
            config,
            tmp_path / "first",
            recorder=Recorder(stop_after_steps=5),
            validation=VALIDATION,
            checkpoints=checkpoints,
        )
    newest = latest_checkpoint(checkpoints)
    assert newest is not None and newest.name == "checkpoint-4"
    assert not (tmp_path / "first").exists()

    resumed, recorder = run(
        config,
        tmp_path / "second",
        validation=VALIDATION,
        checkpoints=checkpoints,
        resume_from=newest,
    )
    full, full_recorder = uninterrupted
    assert [m.step for m in recorder.steps] == list(range(5, 11))
    expected = {m.step: m for m in full_recorder.steps}
    for metrics in recorder.steps:
        reference = expected[metrics.step]
        assert metrics.loss == reference.loss, f"step {metrics.step}"
        assert metrics.learning_rate == reference.learning_rate, f"step {metrics.step}"
        assert metrics.grad_norm == reference.grad_norm, f"step {metrics.step}"
        assert metrics.epoch == reference.epoch, f"step {metrics.step}"
        assert metrics.val_loss == reference.val_loss, f"step {metrics.step}"
    assert "Resuming from the checkpoint of step 4" in recorder.messages
    assert (resumed.steps, resumed.final_loss, resumed.tokens) == (
        full.steps,
        full.final_loss,
        full.tokens,
    )
    assert (resumed.best_step, resumed.best_val_loss) == (full.best_step, full.best_val_loss)
    weights = load_file(str(resumed.adapter_dir / "adapter_model.safetensors"))
    reference_weights = load_file(str(full.adapter_dir / "adapter_model.safetensors"))
    assert weights.keys() == reference_weights.keys()
    for name, tensor in weights.items():
        assert torch.equal(tensor, reference_weights[name]), name


def test_checkpoints_every_n_steps_and_at_the_end_keep_the_last_k(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = tiny_config(tiny_model_dir, max_steps=7, checkpoint_every=2, keep_checkpoints=2)
    checkpoints = tmp_path / "checkpoints"
    _, recorder = run(config, tmp_path / "adapter", checkpoints=checkpoints)
    saved = [data["step"] for _, m, data in recorder.events if m.startswith("Checkpoint saved")]
    assert saved == [2, 4, 6, 7], "every 2 steps and one at the end"
    assert [p.name for p in list_checkpoints(checkpoints)] == ["checkpoint-6", "checkpoint-7"]
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-6", "checkpoint-7"], (
        "no staging folders are left behind"
    )
    files = sorted(p.name for p in (checkpoints / "checkpoint-7").iterdir())
    assert files == ["state.json", "trainable.safetensors", "training.pt"]


def test_resuming_from_the_final_checkpoint_trains_nothing_more(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = tiny_config(tiny_model_dir, max_steps=3, checkpoint_every=3)
    checkpoints = tmp_path / "checkpoints"
    first, _ = run(config, tmp_path / "first", checkpoints=checkpoints)
    again, recorder = run(
        config,
        tmp_path / "again",
        checkpoints=checkpoints,
        resume_from=checkpoints / "checkpoint-3",
    )
    assert recorder.steps == []
    assert (again.steps, again.final_loss) == (first.steps, first.final_loss)
    assert (again.adapter_dir / "adapter_model.safetensors").is_file()


def test_a_checkpoint_of_other_settings_is_refused_naming_them(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    checkpoints = tmp_path / "checkpoints"
    run(
        tiny_config(tiny_model_dir, max_steps=2, checkpoint_every=2),
        tmp_path / "a",
        checkpoints=checkpoints,
    )
    other = tiny_config(tiny_model_dir, max_steps=2, learning_rate=1e-3, checkpoint_every=2)
    with pytest.raises(TrainingError, match="learning_rate"):
        run(other, tmp_path / "b", resume_from=checkpoints / "checkpoint-2")
    assert not (tmp_path / "b").exists()


def test_a_checkpoint_of_other_data_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(tiny_model_dir, max_steps=2, checkpoint_every=2)
    checkpoints = tmp_path / "checkpoints"
    run(config, tmp_path / "a", checkpoints=checkpoints)
    with pytest.raises(TrainingError, match="other training data"):
        train(
            config,
            records=RECORDS[:8],
            output_dir=tmp_path / "b",
            model_cache_dir=tmp_path / "cache",
            resume_from=checkpoints / "checkpoint-2",
        )


def test_a_damaged_checkpoint_is_refused_as_incompatible(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = tiny_config(tiny_model_dir, max_steps=2, checkpoint_every=2)
    checkpoints = tmp_path / "checkpoints"
    run(config, tmp_path / "a", checkpoints=checkpoints)
    damaged = checkpoints / "checkpoint-2" / "training.pt"
    damaged.write_bytes(damaged.read_bytes()[:100])
    with pytest.raises(IncompatibleCheckpoint, match="cannot be read"):
        run(config, tmp_path / "b", resume_from=checkpoints / "checkpoint-2")


def test_validation_loss_is_reported_at_its_steps_and_the_best_is_named(
    uninterrupted: tuple[TrainResult, Recorder],
) -> None:
    result, recorder = uninterrupted
    evaluated = {m.step: m.val_loss for m in recorder.steps if m.val_loss is not None}
    assert sorted(evaluated) == [3, 6, 9, 10], "every eval_every steps and at the end"
    assert all(math.isfinite(v) and v > 0 for v in evaluated.values())
    best = min(evaluated, key=lambda s: evaluated[s])
    assert (result.best_step, result.best_val_loss) == (best, evaluated[best])
    assert not result.stopped_early
    done = next(data for _, message, data in recorder.events if message == "Done")
    assert done is not None and done["best_step"] == best
    assert "Validation loss on 3 samples" in recorder.messages


def test_early_stopping_ends_the_run_keeping_the_last_adapter(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    # No step can lower the validation loss by a whole nat at this learning rate, so each
    # evaluation after the first counts against the patience.
    config = tiny_config(
        tiny_model_dir,
        max_steps=20,
        learning_rate=1e-5,
        eval_every=2,
        early_stopping_patience=2,
        early_stopping_min_delta=1.0,
    )
    result, recorder = run(config, tmp_path / "adapter", validation=VALIDATION)
    assert result.stopped_early
    assert result.steps == 6, "evaluated at 2 (reference), 4 and 6 (no improvement twice)"
    assert [m.step for m in recorder.steps] == list(range(1, 7))
    assert recorder.steps[-1].eta_seconds == 0
    stop = next(
        (message, data) for _, message, data in recorder.events if message.startswith("Stopped")
    )
    assert "step 6 of 20" in stop[0] and f"at step {result.best_step}" in stop[0]
    assert stop[1] is not None and stop[1]["best_step"] == result.best_step
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()


def test_early_stopping_without_validation_data_warns_and_trains_on(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = tiny_config(tiny_model_dir, max_steps=2, early_stopping_patience=1)
    result, recorder = run(config, tmp_path / "adapter")
    assert result.steps == 2 and not result.stopped_early
    assert any("Early stopping is off" in w for w in recorder.warnings())


def test_same_seed_and_data_give_the_same_loss_and_validation_curves(
    tiny_model_dir: Path, tmp_path: Path, uninterrupted: tuple[TrainResult, Recorder]
) -> None:
    _, first = uninterrupted
    config = tiny_config(tiny_model_dir, **RESUMABLE)
    _, again = run(config, tmp_path / "again", validation=VALIDATION)
    assert [(m.loss, m.val_loss) for m in again.steps] == [
        (m.loss, m.val_loss) for m in first.steps
    ]
    _, other_seed = run(config.model_copy(update={"seed": 7}), tmp_path / "other")
    assert [m.loss for m in other_seed.steps] != [m.loss for m in first.steps]


def test_progress_reports_fractional_epochs_and_a_falling_eta(
    uninterrupted: tuple[TrainResult, Recorder],
) -> None:
    _, recorder = uninterrupted
    steps = recorder.steps
    # 3 steps an epoch: two full steps of two batches, then one of two batches again.
    assert [round(m.epoch, 4) for m in steps[:4]] == [
        round(2 / 6, 4),
        round(4 / 6, 4),
        1.0,
        round(1 + 2 / 6, 4),
    ]
    assert all(m.tokens_per_second > 0 for m in steps)
    assert steps[-1].eta_seconds == 0 and all(m.eta_seconds > 0 for m in steps[:-1])
    assert all(m.gpu_memory_bytes is None for m in steps), "no GPU in these tests"


def test_min_delta_without_patience_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError) as caught:
        TrainConfig(base_model="x", early_stopping_min_delta=0.1)
    assert caught.value.errors()[0]["loc"] == ("early_stopping_min_delta",)
    with pytest.raises(ValidationError) as caught:
        TrainConfig(base_model="x", checkpoint_every=0, keep_checkpoints=0)
    assert {e["loc"][0] for e in caught.value.errors()} == {"checkpoint_every", "keep_checkpoints"}


def test_tunelab_train_reads_validation_data_and_shows_epoch_eta_and_val_loss(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "train.jsonl").write_bytes(jsonl(alpaca_records(12)))
    (tmp_path / "val.jsonl").write_bytes(jsonl(alpaca_records(4, start=100)))
    config = tmp_path / "run.yaml"
    settings = {
        "base_model": str(tiny_model_dir),
        "max_steps": 4,
        "batch_size": 4,
        "learning_rate": 5e-3,
        "max_seq_length": 64,
        "eval_every": 2,
        "data": "train.jsonl",
        "validation_data": "val.jsonl",
        "output": "out/adapter",
    }
    config.write_text(yaml.safe_dump(settings), encoding="utf-8")
    assert run_config_file(config, data=None, output=None) == 0
    out, err = capsys.readouterr()
    assert "4 alpaca records from" in err
    assert "4/4" in err
    assert all(f"{key}=" in err for key in ("epoch", "loss", "tok/s", "eta", "val_loss"))
    assert "best validation loss" in out
    assert (tmp_path / "out" / "adapter" / "adapter_model.safetensors").is_file()
