"""`tunelab train CONFIG.yaml`: the engine run locally, no server, no database."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.factories import alpaca_records, jsonl


def run_train(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "train", str(config)],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_train_from_yaml_saves_an_adapter_and_shows_progress(
    tmp_path: Path, tiny_model: Path
) -> None:
    (tmp_path / "train.jsonl").write_bytes(jsonl(alpaca_records(8)))
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "base_model": str(tiny_model),
                "method": "lora",
                "max_steps": 5,
                "batch_size": 2,
                "max_seq_length": 64,
                "data": "train.jsonl",
                "output": "out/adapter",
            }
        )
    )
    result = run_train(config)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "adapter" / "adapter_model.safetensors").is_file()
    assert "5/5" in result.stderr  # the progress bar reached the end
    assert "final loss" in result.stdout


def test_train_names_the_bad_field_of_the_yaml(tmp_path: Path, tiny_model: Path) -> None:
    (tmp_path / "train.jsonl").write_bytes(jsonl(alpaca_records(2)))
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "base_model": str(tiny_model),
                "batch_size": 0,
                "data": "train.jsonl",
            }
        )
    )
    result = run_train(config)
    assert result.returncode == 2
    assert "config.batch_size" in result.stderr


def test_train_reports_the_line_of_bad_data(tmp_path: Path, tiny_model: Path) -> None:
    (tmp_path / "train.jsonl").write_text('{"instruction": "a", "output": "b"}\nnot json\n')
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"base_model": str(tiny_model), "data": "train.jsonl"}))
    result = run_train(config)
    assert result.returncode == 2
    assert "train.jsonl:2:" in result.stderr
    assert not (tmp_path / "tunelab-adapter").exists()
