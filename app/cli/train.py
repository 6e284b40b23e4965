"""``tunelab train CONFIG.yaml``: the engine run locally, with a progress bar and no server."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from app.core.config import get_settings
from app.core.errors import InvalidInput
from app.core.i18n import N_, gettext
from app.core.messages import translate_message
from app.datasets import parsing as dataset_parsing

# The engine's event levels, as the terminal shows them.
LEVELS = {"info": N_("info"), "warning": N_("warning"), "error": N_("error")}


class ProgressReporter:
    def __init__(self, show: bool) -> None:
        self.show = show
        self.bar: tqdm[Any] | None = None
        self.val_loss: float | None = None  # the latest, shown until the next evaluation

    def on_event(self, level: str, message: str, data: dict[str, Any] | None = None) -> None:
        from app.services.jobs.events import event_text

        shown = gettext(LEVELS[level]) if level in LEVELS else level
        text = f"[{shown}] {event_text(message, data)}"
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, file=sys.stderr)

    def on_step(self, metrics: Any) -> None:
        if not self.show:
            return
        if self.bar is None:
            # tqdm's own rate and remaining time are left out: the engine's ETA comes from
            # the mean time per step of the whole run, evaluations and checkpoints included.
            self.bar = tqdm(
                total=metrics.total_steps,
                initial=metrics.step - 1,  # a resumed run starts part-way
                unit="step",
                dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]",
            )
        postfix = {
            "epoch": f"{metrics.epoch:.2f}",
            "loss": f"{metrics.loss:.4f}",
            "tok/s": f"{metrics.tokens_per_second:.0f}",
            "eta": format_duration(metrics.eta_seconds),
        }
        if metrics.val_loss is not None:
            self.val_loss = metrics.val_loss
        if self.val_loss is not None:
            postfix["val_loss"] = f"{self.val_loss:.4f}"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(metrics.step - self.bar.n)  # one redraw, with the new figures

    def should_stop(self) -> bool:
        return False

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def format_duration(seconds: float) -> str:
    """12s, 4m05s, 2h03m: short enough for a progress bar."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _read_records(path: Path) -> list[dict[str, Any]] | None:
    """The chat records of a data file, or None after printing where it is wrong."""
    with tempfile.TemporaryDirectory() as tmp:
        records_path = Path(tmp) / "records.jsonl"
        report = dataset_parsing.validate_file(path, dest=records_path)
        if not report.ok:
            for record_error in report.errors:
                where = f"`{record_error.field}` " if record_error.field else ""
                message = translate_message(record_error.message)
                print(f"{path}:{record_error.line}: {where}{message}", file=sys.stderr)
            if report.error_count > len(report.errors):
                print(
                    gettext("... %(count)s errors in all", count=report.error_count),
                    file=sys.stderr,
                )
            if not report.errors:
                print(gettext("%(path)s: no records to train on", path=path), file=sys.stderr)
            return None
        with records_path.open(encoding="utf-8") as fh:
            records = [json.loads(line) for line in fh]
    print(
        gettext(
            "%(count)s %(format)s records from %(path)s",
            count=len(records),
            format=report.format,
            path=path,
        ),
        file=sys.stderr,
    )
    return records


def run_config_file(
    config_path: Path, *, data: Path | None, output: Path | None, progress: bool = True
) -> int:
    """Validate the YAML and the data file, train, and print where the adapter went."""
    # Imported here, not at the top: the service layer (app.services.jobs) and the engine take
    # seconds to load, which no other `tunelab` command should wait for; the engine only once
    # the YAML and the data have passed, so their errors come back at once.
    from app.services.jobs import validate_config

    raw = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        print(
            gettext("%(path)s: expected a mapping of settings", path=config_path), file=sys.stderr
        )
        return 2
    data_value, output_value = raw.pop("data", None), raw.pop("output", None)
    validation_value = raw.pop("validation_data", None)
    resume_value = raw.pop("resume_from", None)
    # Paths in the YAML are relative to the YAML file, so a config travels with its data.
    data_path = data or (config_path.parent / str(data_value) if data_value else None)
    output_path = output or config_path.parent / str(output_value or "tunelab-adapter")
    validation_path = config_path.parent / str(validation_value) if validation_value else None
    resume_path = config_path.parent / str(resume_value) if resume_value else None
    if data_path is None:
        print(
            gettext("no training data: set `data:` in the YAML or pass --data FILE"),
            file=sys.stderr,
        )
        return 2
    try:
        config = validate_config(raw)
    except InvalidInput as exc:
        for field_error in exc.errors:
            message = translate_message(field_error.message)
            print(f"{config_path}: {field_error.field}: {message}", file=sys.stderr)
        return 2
    records = _read_records(data_path)
    if records is None:
        return 2
    validation = _read_records(validation_path) if validation_path is not None else []
    if validation is None:
        return 2
    from worker.training import TrainingCancelled, TrainingError, distributed

    reporter = ProgressReporter(progress)
    settings = get_settings()
    try:
        # On every GPU here that the config's gpus allows (several: torchrun's processes).
        result = distributed.train(
            config,
            records=records,
            output_dir=output_path,
            model_cache_dir=settings.model_cache_dir,
            callbacks=reporter,
            allow_downloads=settings.allow_hub_downloads,
            validation_records=validation,
            # With checkpoint_every set, checkpoints go beside the output folder; the YAML's
            # resume_from names one of them to carry on from after an interruption.
            checkpoint_dir=(
                output_path.with_name(f"{output_path.name}.checkpoints")
                if config.checkpoint_every is not None
                else None
            ),
            resume_from=resume_path,
        )
    except (TrainingError, TrainingCancelled) as exc:
        reporter.close()
        print(gettext("training failed: %(error)s", error=exc), file=sys.stderr)
        return 1
    reporter.close()
    best = ""
    if result.best_step is not None and result.best_val_loss is not None:
        best = gettext(
            ", best validation loss %(loss)s at step %(step)s",
            loss=f"{result.best_val_loss:.4f}",
            step=result.best_step,
        )
    stopped = gettext(" (stopped early)") if result.stopped_early else ""
    print(
        gettext(
            "done: %(steps)s steps%(stopped)s, final loss %(loss)s%(best)s, adapter saved to "
            "%(folder)s",
            steps=result.steps,
            stopped=stopped,
            loss=f"{result.final_loss:.4f}",
            best=best,
            folder=result.adapter_dir,
        )
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from worker.spec.versions import warn_untested_versions

    warn_untested_versions()
    from app.cli.train import run_config_file

    return run_config_file(
        Path(args.config),
        data=Path(args.data) if args.data else None,
        output=Path(args.output) if args.output else None,
        progress=not args.quiet,
    )
