"""Peak GPU memory and wall time of a run before it is queued, for the job form and the API.

A thin layer over ``worker.spec.estimate`` (torch-free): it finds the model's architecture
in the catalog, turns a dataset version's statistics into sample lengths in tokens, and says
in words what the numbers assume.
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from app.core.config import get_settings
from app.core.errors import FieldError, InvalidInput
from app.core.i18n import _, number
from app.models import DatasetVersion, User
from app.services import access
from app.services import datasets as datasets_service
from app.services.jobs.base_models import check_base_model
from worker.spec.autoconfig import ConfigProblem, check_against_dataset, chosen_fields, resolve_auto
from worker.spec.catalog import CATALOG, CatalogEntry, catalog_entry
from worker.spec.config import TrainConfig
from worker.spec.cpu_time import ASSUMED, CpuCalibration, as_dict, read_calibration
from worker.spec.estimate import estimate, gpu_spec, known_gpu

# Without a dataset: a thousand chat samples of 400 tokens, half of them answer.
DEFAULT_RECORDS = 1000
DEFAULT_MEAN_TOKENS = 400.0
# Characters per token of current tokenizers (Qwen, Llama 3), by the script a sample is
# mostly written in, and the chat template's markup per turn, in tokens: for statistics
# counted in characters (no tokenizer chosen yet).
_CHARACTERS_PER_TOKEN = {"zh": 1.4, "ja": 1.3, "ko": 1.6, "latin": 4.0, "other": 3.0, "none": 4.0}
_TEMPLATE_TOKENS_PER_TURN = 6


@dataclass(frozen=True)
class DatasetLengths:
    """What the estimate needs of a dataset: its size and sample lengths in tokens."""

    records: int
    mean_tokens: float
    p95_tokens: float | None
    answer_share: float
    source: str  # how the lengths were obtained, in words


def estimate_for(
    config: TrainConfig,
    *,
    dataset: DatasetLengths | None,
    gpu_name: str | None,
    cpu: CpuCalibration | None = None,
    gpu_memory_bytes: int | None = None,
) -> dict[str, Any]:
    """The estimate as plain data (on ``cpu`` when the job will train on a CPU worker), or ``{"available": False, "reason": ...}`` for a model
    whose architecture is not known here (a hub id or folder outside the catalog).

    Raises InvalidInput naming the config field when the config cannot run on this model or
    dataset (e.g. max_seq_length beyond the model's context).
    """
    entry = _catalog_entry_for(config.base_model)
    if entry is None:
        return {
            "available": False,
            "reason": _(
                "No estimate for '%(model)s': only models in the catalog have known sizes. "
                "Pick a catalog model of the same shape to get one.",
                model=config.base_model,
            ),
        }
    gpu = gpu_spec(gpu_name)
    if gpu_memory_bytes is not None:  # a card of this size (placement's classes)
        gpu = dataclasses.replace(gpu, memory_bytes=gpu_memory_bytes)
    assumptions = []
    given = dataset is not None
    if dataset is None:
        dataset = DatasetLengths(
            DEFAULT_RECORDS, DEFAULT_MEAN_TOKENS, None, 0.5, _("no dataset chosen")
        )
        assumptions.append(
            _(
                "No dataset: assumes %(records)s samples of %(tokens)s tokens.",
                records=number(DEFAULT_RECORDS),
                tokens=f"{DEFAULT_MEAN_TOKENS:.0f}",
            )
        )
    else:
        assumptions.append(_("Sample lengths: %(source)s.", source=dataset.source))
    if cpu is not None:
        assumptions.append(_("Trains on the CPU: %(cpu)s.", cpu=_cpu_words(cpu)))
    elif known_gpu(gpu_name) is None:
        assumptions.append(
            _(
                "GPU: %(name)s (%(gib)s GiB) assumed.",
                name=gpu.name,
                gib=f"{gpu.memory_bytes / 2**30:.0f}",
            )
        )
    try:
        resolved = resolve_auto(
            config,
            model_params=entry.params,
            dataset_records=dataset.records,
            dataset_p95_tokens=dataset.p95_tokens,
            context_length=entry.context_length,
            cpu=cpu is not None,
        )
        if given:
            check_against_dataset(resolved, dataset_records=dataset.records)
        result = estimate(
            resolved,
            entry.arch,
            gpu=gpu,
            dataset_records=dataset.records,
            mean_tokens=dataset.mean_tokens,
            p95_tokens=dataset.p95_tokens,
            answer_share=dataset.answer_share,
            cpu=cpu,
            gpus=config.gpus if isinstance(config.gpus, int) else 1,
        )
    except ConfigProblem as exc:
        raise InvalidInput(
            f"the training config does not fit this model or dataset: {exc}",
            errors=[FieldError(field=f"config.{exc.field}", message=exc.reason)],
        ) from None
    breakdown = result.breakdown
    assumptions.append(
        _(
            "Memory is the peak PyTorch allocates (measured within %(error)s for LoRA, DoRA, "
            "IA3, P-tuning, prefix-tuning and full fine-tuning on Llama and Qwen shapes); the "
            "GPU also needs the CUDA context and allocator slack (reserved).",
            error="±20%",
        )
    )
    if cpu is not None:
        assumptions.append(
            _(
                "Time is approximate (the engine's measured share of this CPU's matrix rate): "
                "expect %(error)s, more while other programs use the processor.",
                error="±30%",
            )
        )
    else:
        assumptions.append(
            _(
                "Time is approximate (from throughput measured on an H200, scaled by the GPU's "
                "bf16 peak): expect %(error)s, more for QLoRA and models outside the Llama and "
                "Qwen families.",
                error="±30%",
            )
        )
    if breakdown["gpus"] > 1:
        assumptions.append(
            _(
                "On %(n)s GPUs, one process each (adapters replicated with DDP, full fine-tuning "
                "sharded with FSDP): memory is per GPU; the speed-up over one GPU, "
                "%(speed_up)s×, is modelled (each step's samples shared out, plus what the GPUs "
                "exchange every step at PCIe speed), not measured.",
                n=breakdown["gpus"],
                speed_up=f"{breakdown['speed_up']:.1f}",
            )
        )
    warnings = []
    if breakdown["gpus"] > 1 and breakdown["speed_up"] < 1.1:
        warnings.append(
            _(
                "%(n)s GPUs are hardly faster than one here (%(speed_up)s×): each GPU's share of a "
                "step is small next to what the GPUs exchange every step. Set gpus to 1, or use "
                "more samples per step.",
                n=breakdown["gpus"],
                speed_up=f"{breakdown['speed_up']:.1f}",
            )
        )
    if not breakdown["fits"]:
        warnings.append(
            _(
                "This run needs about %(needs)s GiB, more than the %(has)s GiB of the %(gpu)s: "
                "lower the max sequence length or the tokens per micro-batch, or use QLoRA.",
                needs=f"{result.peak_memory_bytes / 2**30:.0f}",
                has=f"{gpu.memory_bytes / 2**30:.0f}",
                gpu=gpu.name,
            )
        )
    elif breakdown["tight"]:
        warnings.append(
            _(
                "A close fit on the %(gpu)s: the run fills most of its memory, so it may run "
                "out; a lower max sequence length or fewer tokens per micro-batch leaves room.",
                gpu=gpu.name,
            )
        )
    if breakdown["gradient_checkpointing"]:
        warnings.append(
            _(
                "Gradient checkpointing will be on (a row of the longest samples does not fit "
                "otherwise): about half as much compute again."
            )
        )
    return {
        "available": True,
        "model": {
            "name": config.base_model,
            "title": entry.title,
            "params": entry.params,
            "context_length": entry.context_length,
        },
        "gpu": {"name": gpu.name, "memory_bytes": gpu.memory_bytes},
        "device": "cpu" if cpu is not None else "gpu",
        "cpu": as_dict(cpu) if cpu is not None else None,
        "gpus": breakdown["gpus"],
        "speed_up": breakdown["speed_up"],
        "peak_memory_bytes": result.peak_memory_bytes,  # per GPU
        "peak_memory_gib": round(result.peak_memory_bytes / 2**30, 1),
        "reserved_bytes": breakdown["reserved_bytes"],
        "fits": breakdown["fits"],
        "tight": breakdown["tight"],
        "seconds": result.seconds,
        "duration": human_duration(result.seconds),
        "steps": breakdown["steps"],
        "tokens": breakdown["tokens"],
        "tokens_per_second": breakdown["tokens_per_second"],
        "gradient_checkpointing": breakdown["gradient_checkpointing"],
        "chosen": chosen_fields(config, resolved),
        "memory_bytes": breakdown["memory_bytes"],
        "time_seconds": breakdown["seconds"],
        "dataset": {
            "records": dataset.records,
            "mean_tokens": round(dataset.mean_tokens, 1),
            "p95_tokens": dataset.p95_tokens,
        },
        "assumptions": assumptions,
        "warnings": warnings,
    }


def estimate_for_dataset(
    session: Session,
    *,
    user: User,
    config: TrainConfig,
    dataset_id: uuid.UUID | None,
    dataset_version: int | None,
    gpu_name: str | None,
) -> dict[str, Any]:
    """``estimate_for`` with the lengths of a dataset version the user may read, for a base
    model the rule for users' base models accepts (``base_models.check_base_model``)."""
    check_base_model(config.base_model)
    lengths = None
    if dataset_id is not None:
        dataset = access.dataset_for(session, user, dataset_id)
        version = datasets_service.version_of(dataset, dataset_version)
        lengths = lengths_of_version(version, base_model=config.base_model)
    return estimate_for(config, dataset=lengths, gpu_name=gpu_name, cpu=worker_cpu(gpu_name))


def worker_cpu(gpu_name: str | None) -> CpuCalibration | None:
    """The CPU a job will train on when the workers have no GPU and no GPU was named for a
    what-if estimate: the worker's own measurement, or an assumption until it has one."""
    settings = get_settings()
    if gpu_name or settings.workers_have_cuda:
        return None
    return read_calibration(settings.data_dir) or ASSUMED


def lengths_of_version(version: DatasetVersion, *, base_model: str) -> DatasetLengths:
    """The training split's size and the version's sample lengths, in the model's tokens
    when statistics with its tokenizer were computed, else converted from characters."""
    train = datasets_service.split_counts(version).get("train") or version.records
    entry = _catalog_entry_for(base_model)
    names = [base_model.strip()] + (
        [entry.stats_tokenizer] if entry and entry.stats_tokenizer else []
    )
    token_stats = version.token_stats or {}
    for name in names:
        for key, stats in token_stats.items():
            if key.split("@", 1)[0] == name and isinstance(stats, Mapping):
                return lengths_from_stats(stats, records=train, tokenizer=name)
    return lengths_from_stats(version.stats or {}, records=train, tokenizer=None)


def lengths_from_stats(
    stats: Mapping[str, Any], *, records: int | None, tokenizer: str | None
) -> DatasetLengths:
    """Sample lengths from ``dataset_stats.compute_stats`` output (tokens or characters)."""
    total = stats.get("total") or {}
    answer = stats.get("answer") or {}
    count = records or int(stats.get("records") or 0) or DEFAULT_RECORDS
    mean = float(total.get("mean") or 0)
    if mean <= 0:
        return DatasetLengths(count, DEFAULT_MEAN_TOKENS, None, 0.5, _("unknown (no statistics)"))
    share = float(answer.get("mean") or 0) / mean if answer.get("mean") else 0.5
    p90, p99 = total.get("p90"), total.get("p99")
    p95 = (
        p90 + (p99 - p90) * 5 / 9
        if isinstance(p90, int | float) and isinstance(p99, int | float)
        else None
    )
    if stats.get("unit") == "tokens":
        source = _(
            "measured in tokens of the %(tokenizer)s tokenizer",
            tokenizer=tokenizer or stats.get("tokenizer"),
        )
        return DatasetLengths(count, mean, p95, min(1.0, share), source)
    per_token = _characters_per_token(stats.get("languages") or {})
    overhead = _TEMPLATE_TOKENS_PER_TURN * float(stats.get("mean_turns") or 2)
    return DatasetLengths(
        count,
        mean / per_token + overhead,
        p95 / per_token + overhead if p95 is not None else None,
        min(1.0, share),
        _(
            "converted from characters at ~%(n)s characters per token (compute token "
            "statistics with the model's tokenizer for a closer estimate)",
            n=f"{per_token:.1f}",
        ),
    )


def _cpu_words(cpu: CpuCalibration) -> str:
    """``CpuCalibration.describe`` (worker/spec, English) in the reader's language."""
    if not cpu.measured:
        return _(
            "CPU not measured yet (start the worker once): %(gflops)s GFLOP/s assumed",
            gflops=f"{ASSUMED.matmul_gflops:.0f}",
        )
    return _(
        "%(processor)s, %(threads)s threads, %(gflops)s GFLOP/s in %(dtype)s (measured by the "
        "worker)",
        processor=cpu.processor,
        threads=cpu.threads,
        gflops=f"{cpu.matmul_gflops:.0f}",
        dtype=cpu.dtype,
    )


def human_duration(seconds: float) -> str:
    """'about 40 s', 'about 25 min', 'about 3.5 h' (“约 40 秒”), in the reader's language."""
    if seconds < 90:
        return _("about %(n)s s", n=max(1, round(seconds)))
    if seconds < 90 * 60:
        return _("about %(n)s min", n=round(seconds / 60))
    hours = seconds / 3600
    if hours < 24:
        return _("about %(n)s h", n=number(hours, digits=1))
    return _("about %(n)s days", n=math.ceil(hours / 24))


def _characters_per_token(languages: Mapping[str, Any]) -> float:
    counts = {k: float(v) for k, v in languages.items() if isinstance(v, int | float) and v > 0}
    total = sum(counts.values())
    if not total:
        return _CHARACTERS_PER_TOKEN["latin"]
    # Averaged over samples as tokens per character, since token counts add up.
    tokens_per_char = sum(
        n / total / _CHARACTERS_PER_TOKEN.get(lang, 3.0) for lang, n in counts.items()
    )
    return 1 / tokens_per_char


def _catalog_entry_for(base_model: str) -> CatalogEntry | None:
    entry = catalog_entry(base_model)
    if entry is not None:
        return entry
    # A hub id that a catalog entry stands for.
    wanted = base_model.strip().lower()
    return next((e for e in CATALOG.values() if e.hub_id and e.hub_id.lower() == wanted), None)
