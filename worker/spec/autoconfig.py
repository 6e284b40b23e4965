"""Choosing the run-config fields left at "auto" from the model's size and the dataset.

The rules are deliberately plain, so a person can predict them (and the job page shows what
was chosen):

- epochs: 3 passes under 1,000 samples, 2 under 10,000, else 1;
- samples per optimiser step: about one 32nd of the dataset, a power of two from 4 to 64;
  batch_size takes up to 16 of them (fewer for long samples, so that a padded batch stays
  under ~16k tokens) and gradient_accumulation_steps the rest;
- learning_rate: by method (LoRA 2e-4, 1e-4 from 20B parameters; IA3 3e-3; prefix-tuning
  1e-2; P-tuning 3e-3; full fine-tuning 5e-5 under 1B parameters, else 2e-5);
- max_seq_length: the dataset's 95th-percentile sample length plus a tenth, rounded up to a
  multiple of 128 (2,048 when the lengths are unknown), within the model's context;
- warmup_steps: 3% of the run's optimiser steps;
- lora_r: 8 under 500 samples, 16 under 20,000, else 32; lora_alpha twice the rank (equal to
  it with rsLoRA, whose scale already grows with the rank); lora_dropout 0.05 under 10,000
  samples, else none.

On a worker without CUDA (``cpu=True``) every minute counts, so the rules aim at the best
quality per minute instead (see ``CPU_RULES`` and the README's "Training on a CPU" for the
measurements behind them): one pass over the data, a learning rate four times higher for
LoRA-family methods under 3B parameters (a short run must move further per step), rank 8,
and samples cut at 1,024 tokens at most.

Torch-free: the estimates in the web process resolve a config the same way the engine does.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.spec.catalog import Architecture, catalog_entry
from worker.spec.config import AUTO_FIELDS, LORA_METHODS, TrainConfig
from worker.spec.errors import TrainingError

UNKNOWN_MAX_SEQ_LENGTH = 2048
# Tokens of one padded batch that the automatic batch size stays under.
PADDED_BATCH_TOKENS = 16384
# Records whose length the engine measures to choose max_seq_length (evenly spaced).
LENGTH_SAMPLE = 2000
# What "auto" chooses on a CPU worker, where the default run must finish in minutes.
CPU_EPOCHS = 1.0
CPU_LORA_RANK = 8
CPU_MAX_SEQ_LENGTH = 1024
# LoRA-family learning rate on a CPU under this many parameters; larger models keep the
# GPU's rule.
CPU_LORA_LEARNING_RATE = 8e-4
CPU_FAST_RATE_MAX_PARAMS = 3_000_000_000


class ConfigProblem(TrainingError):
    """A config that cannot run on this model or dataset; names the field and why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def resolve_auto(
    config: TrainConfig,
    *,
    model_params: int | None,
    dataset_records: int | None,
    dataset_p95_tokens: float | None = None,
    context_length: int | None = None,
    cpu: bool = False,
) -> TrainConfig:
    """A copy of ``config`` with every "auto" field chosen; explicit values are kept.
    ``cpu`` applies the CPU rules (a worker without CUDA).

    Unknown inputs (None) fall back to middle-of-the-road choices: a 1B model, 1,000 records,
    samples of unknown length. Raises ConfigProblem when an explicit max_seq_length is more
    than the model's context.
    """
    params = model_params or 1_000_000_000
    records = dataset_records if dataset_records and dataset_records > 0 else 1000
    lora = config.method in LORA_METHODS
    context = context_length or _catalog_context(config.base_model)
    chosen: dict[str, Any] = {}

    def pick(name: str, value: Any) -> Any:
        current = getattr(config, name)
        if current != "auto":
            return current
        chosen[name] = value
        return value

    longest = _max_seq_length(dataset_p95_tokens, context)
    max_seq = pick("max_seq_length", min(longest, CPU_MAX_SEQ_LENGTH) if cpu else longest)
    if context is not None and max_seq > context:
        raise ConfigProblem(
            "max_seq_length",
            f"{max_seq} tokens is more than this model reads at once ({context:,} tokens); use "
            f"at most {context} or auto",
        )
    pick(
        "epochs",
        CPU_EPOCHS if cpu else 3.0 if records < 1000 else 2.0 if records < 10_000 else 1.0,
    )
    per_step = min(64, max(4, _power_of_two_at_most(records // 32)))
    batch_size = config.batch_size
    accum = config.gradient_accumulation_steps
    if batch_size == "auto":
        fits = max(1, _power_of_two_at_most(PADDED_BATCH_TOKENS // max_seq))
        divisor = 1 if accum == "auto" else accum
        batch_size = pick("batch_size", max(1, min(16, fits, per_step // divisor)))
    if accum == "auto":
        accum = pick("gradient_accumulation_steps", max(1, round(per_step / batch_size)))
    fast = cpu and lora and params < CPU_FAST_RATE_MAX_PARAMS
    pick("learning_rate", CPU_LORA_LEARNING_RATE if fast else _learning_rate(config, params))
    epochs = chosen.get("epochs", config.epochs)
    steps = config.max_steps or total_steps(records, batch_size, accum, epochs)
    pick("warmup_steps", int(0.03 * steps))
    if lora:
        rank = pick(
            "lora_r",
            CPU_LORA_RANK if cpu else 8 if records < 500 else 16 if records < 20_000 else 32,
        )
        pick("lora_alpha", rank if config.use_rslora else 2 * rank)
        pick("lora_dropout", 0.05 if records < 10_000 else 0.0)
    else:
        # Read by the engine's memory planning whatever the method; no LoRA, no dropout.
        pick("lora_dropout", 0.0)
    return config.model_copy(update=chosen)


@dataclass(frozen=True)
class Settled:
    """The numbers of a resolved config with their concrete types, for code that computes
    with them (``TrainConfig`` types each field as number-or-"auto")."""

    epochs: float | None
    learning_rate: float
    batch_size: int
    gradient_accumulation_steps: int
    max_seq_length: int
    warmup_steps: int
    lora_dropout: float
    lora_r: int | None  # None for methods without LoRA
    lora_alpha: int | None


def settled(config: TrainConfig) -> Settled:
    """``config``'s numbers once ``resolve_auto`` has run; "auto" left here is a bug in the
    caller (it skipped resolving), not a user error, so it raises ValueError."""
    left = [name for name in AUTO_FIELDS if getattr(config, name) == "auto"]
    if config.method not in LORA_METHODS:
        left = [name for name in left if name not in ("lora_r", "lora_alpha")]
    if left:
        raise ValueError(f"resolve_auto was not run: {', '.join(left)} still auto")

    def number(value: Any) -> Any:
        return None if value == "auto" else value

    return Settled(
        epochs=number(config.epochs),
        learning_rate=number(config.learning_rate),
        batch_size=number(config.batch_size),
        gradient_accumulation_steps=number(config.gradient_accumulation_steps),
        max_seq_length=number(config.max_seq_length),
        warmup_steps=number(config.warmup_steps),
        lora_dropout=number(config.lora_dropout),
        lora_r=number(config.lora_r),
        lora_alpha=number(config.lora_alpha),
    )


def check_against_dataset(config: TrainConfig, *, dataset_records: int) -> None:
    """Refuse (ConfigProblem) explicit batch settings that ask one optimiser step for more
    samples than the dataset has: every epoch would be a single, partial step. Checked before
    queueing; the engine itself trains such a config as it is."""
    batch_size, accum = config.batch_size, config.gradient_accumulation_steps
    if batch_size == "auto" or accum == "auto" or dataset_records <= 0:
        return
    if batch_size * accum > dataset_records:
        field = "batch_size" if batch_size > dataset_records else "gradient_accumulation_steps"
        raise ConfigProblem(
            field,
            f"batch_size × gradient_accumulation_steps is {batch_size * accum} samples per "
            f"optimiser step, more than the {dataset_records:,} samples of the dataset; use at "
            "most that many, or auto",
        )


def total_steps(records: int, batch_size: int, accum: int, epochs: Any) -> int:
    """Optimiser steps of a run over ``records`` samples, as the engine counts them."""
    passes = float(epochs) if isinstance(epochs, int | float) else 1.0
    per_epoch = math.ceil(math.ceil(records / batch_size) / accum)
    return max(1, math.ceil(per_epoch * passes))


def chosen_fields(before: TrainConfig, after: TrainConfig) -> dict[str, Any]:
    """The fields that were "auto" in ``before`` and what ``after`` has for them."""
    return {
        name: getattr(after, name)
        for name in AUTO_FIELDS
        if getattr(before, name) == "auto" and getattr(after, name) != "auto"
    }


# --- What the engine knows: the model folder and the records -------------------------------


def resolve_for_run(
    config: TrainConfig,
    *,
    records: Sequence[Mapping[str, Any]],
    tokenizer: Any,
    model_dir: Path,
    notify: Callable[[str, dict[str, Any]], None] | None = None,
    cpu: bool = False,
) -> TrainConfig:
    """``resolve_auto`` with the model's config.json and the records' measured lengths."""
    hf_config = _read_config(model_dir)
    p95 = None
    if config.max_seq_length == "auto" and records:
        p95 = percentile(_token_lengths(tokenizer, records, config.system_prompt), 95)
    resolved = resolve_auto(
        config,
        model_params=_params_of(hf_config),
        dataset_records=len(records),
        dataset_p95_tokens=p95,
        context_length=_context_of(hf_config),
        cpu=cpu,
    )
    if notify is not None:
        chosen = chosen_fields(config, resolved)
        if chosen:
            shown = ", ".join(f"{name} {value}" for name, value in chosen.items())
            notify(f"Chosen automatically: {shown}", {"auto": chosen})
    return resolved


def resolve_for_model(
    config: TrainConfig, *, model: Any, samples: Sequence[Any], cpu: bool = False
) -> TrainConfig:
    """``resolve_auto`` for a loaded model (a transformers model) and encoded samples."""
    if not any(getattr(config, name) == "auto" for name in AUTO_FIELDS):
        return config
    lengths = [len(sample.input_ids) for sample in samples]
    hf_config = getattr(model, "config", None)
    context = getattr(hf_config, "max_position_embeddings", None)
    return resolve_auto(
        config,
        model_params=sum(p.numel() for p in model.parameters()),
        dataset_records=len(samples),
        dataset_p95_tokens=percentile(lengths, 95) if lengths else None,
        context_length=context if isinstance(context, int) else None,
        cpu=cpu,
    )


def percentile(values: Sequence[int], p: float) -> int:
    """Nearest-rank percentile, as the dataset statistics compute it."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def _token_lengths(
    tokenizer: Any, records: Sequence[Mapping[str, Any]], system_prompt: str | None
) -> list[int]:
    from worker.spec.formatting import encode, with_system_prompt

    step = max(1, len(records) // LENGTH_SAMPLE)
    lengths = []
    for record in records[::step]:
        try:
            messages = with_system_prompt(record["messages"], system_prompt)
            lengths.append(len(encode(tokenizer, messages, sys.maxsize).input_ids))
        except Exception:  # a record the template refuses is reported when it is encoded
            continue
    return lengths or [UNKNOWN_MAX_SEQ_LENGTH]


def _read_config(model_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _params_of(hf_config: Mapping[str, Any]) -> int | None:
    try:
        return Architecture.from_hf_config(hf_config).params()
    except ValueError:
        return None


def _context_of(hf_config: Mapping[str, Any]) -> int | None:
    text = hf_config.get("text_config")
    source = text if isinstance(text, Mapping) else hf_config
    value = source.get("max_position_embeddings")
    return value if isinstance(value, int) and value > 0 else None


def _catalog_context(base_model: str) -> int | None:
    entry = catalog_entry(base_model)
    return entry.context_length if entry is not None else None


def _max_seq_length(p95_tokens: float | None, context: int | None) -> int:
    if p95_tokens is None or p95_tokens <= 0:
        length = UNKNOWN_MAX_SEQ_LENGTH
    else:
        length = max(128, 128 * math.ceil(p95_tokens * 1.1 / 128))
    return min(length, context) if context else length


def _learning_rate(config: TrainConfig, params: int) -> float:
    if config.method in LORA_METHODS:
        return 1e-4 if params >= 20_000_000_000 else 2e-4
    if config.method == "full":
        return 5e-5 if params < 1_000_000_000 else 2e-5
    return {"ia3": 3e-3, "prefix_tuning": 1e-2, "p_tuning": 3e-3}.get(config.method, 2e-4)


def _power_of_two_at_most(value: int) -> int:
    return 1 << (max(1, value).bit_length() - 1)
