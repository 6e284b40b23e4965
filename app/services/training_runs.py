"""``tunelab train CONFIG.yaml``: the engine run locally, with a progress bar and no server."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from app.core.config import get_settings
from app.core.errors import InvalidInput
from app.services import dataset_parsing
from app.services.jobs import validate_config


class ProgressReporter:
    def __init__(self, show: bool) -> None:
        self.show = show
        self.bar: tqdm[Any] | None = None

    def on_event(self, level: str, message: str, data: dict[str, Any] | None = None) -> None:
        text = f"[{level}] {message}"
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, file=sys.stderr)

    def on_step(self, metrics: Any) -> None:
        if not self.show:
            return
        if self.bar is None:
            self.bar = tqdm(total=metrics.total_steps, unit="step", dynamic_ncols=True)
        self.bar.update(metrics.step - self.bar.n)
        self.bar.set_postfix(
            loss=f"{metrics.loss:.4f}",
            lr=f"{metrics.learning_rate:.2e}",
            tok_s=f"{metrics.tokens_per_second:.0f}",
        )

    def should_stop(self) -> bool:
        return False

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_config_file(
    config_path: Path, *, data: Path | None, output: Path | None, progress: bool = True
) -> int:
    """Validate the YAML and the data file, train, and print where the adapter went."""
    from worker.training import TrainingCancelled, TrainingError, train

    raw = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        print(f"{config_path}: expected a mapping of settings", file=sys.stderr)
        return 2
    data_value, output_value = raw.pop("data", None), raw.pop("output", None)
    # Paths in the YAML are relative to the YAML file, so a config travels with its data.
    data_path = data or (config_path.parent / str(data_value) if data_value else None)
    output_path = output or config_path.parent / str(output_value or "tunelab-adapter")
    if data_path is None:
        print("no training data: set `data:` in the YAML or pass --data FILE", file=sys.stderr)
        return 2
    try:
        config = validate_config(raw)
    except InvalidInput as exc:
        for field_error in exc.errors:
            print(f"{config_path}: {field_error.field}: {field_error.message}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        records_path = Path(tmp) / "records.jsonl"
        report = dataset_parsing.validate_file(data_path, dest=records_path)
        if not report.ok:
            for record_error in report.errors:
                where = f"`{record_error.field}` " if record_error.field else ""
                print(
                    f"{data_path}:{record_error.line}: {where}{record_error.message}",
                    file=sys.stderr,
                )
            if report.error_count > len(report.errors):
                print(f"... {report.error_count} errors in all", file=sys.stderr)
            if not report.errors:
                print(f"{data_path}: no records to train on", file=sys.stderr)
            return 2
        with records_path.open(encoding="utf-8") as fh:
            records = [json.loads(line) for line in fh]
    print(f"{len(records)} {report.format} records from {data_path}", file=sys.stderr)
    reporter = ProgressReporter(progress)
    settings = get_settings()
    try:
        result = train(
            config,
            records=records,
            output_dir=output_path,
            model_cache_dir=settings.model_cache_dir,
            callbacks=reporter,
            allow_downloads=settings.allow_hub_downloads,
        )
    except (TrainingError, TrainingCancelled) as exc:
        reporter.close()
        print(f"training failed: {exc}", file=sys.stderr)
        return 1
    reporter.close()
    print(
        f"done: {result.steps} steps, final loss {result.final_loss:.4f}, "
        f"adapter saved to {result.adapter_dir}"
    )
    return 0
