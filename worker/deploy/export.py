"""Exports of a trained model: the adapter alone, or merged into its base, each checked and
described by a model card. A library like the training engine: no database or Celery.

What ships is what was checked: a merged export is written, read back from disk with plain
transformers, and its logits compared with base + adapter on a few prompts; beyond the
tolerance the export fails and nothing is left behind.
"""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from worker.deploy.card import model_card
from worker.spec.errors import TrainingCancelled, TrainingError
from worker.spec.formatting import Message, ensure_chat_template, render
from worker.training import models

Kind = Literal["adapter", "merged"]
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
# Relative logit difference allowed between the merged model and base + adapter, both run in
# float32. Sums in another order differ by ~1e-6. Storing bf16/fp16 rounds each merged weight
# once (8 or 11 bits of mantissa), which over a deep model adds up: 3.1e-2 on a random
# Llama-3-8B shape in bf16 (H200). A merge mistake (a module left out, a wrong scale) moves
# logits by far more than these bounds.
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 1e-1, torch.float16: 2e-2}
DEFAULT_PROMPTS: list[list[Message]] = [
    [{"role": "user", "content": "Summarize what you can help with in one sentence."}],
    [{"role": "user", "content": "用一句话介绍你自己。"}],
]


class ExportError(TrainingError):
    """The export cannot be made or failed its check; the message says which and why."""


@dataclass
class ExportResult:
    kind: Kind
    folder: Path
    archive: Path
    files: list[str]
    size_bytes: int
    verification: dict[str, Any] | None = None
    note: str | None = None
    card: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def adapter_kind(adapter_dir: Path) -> str:
    """ "lora", "ia3", "prefix_tuning", "p_tuning", … from adapter_config.json; "full" for a
    folder that holds a whole model instead."""
    config = adapter_dir / "adapter_config.json"
    if not config.is_file():
        return "full" if (adapter_dir / "config.json").is_file() else "unknown"
    peft_type = str(json.loads(config.read_text(encoding="utf-8")).get("peft_type", "")).lower()
    return {"prompt_tuning": "prompt_tuning", "p_tuning": "p_tuning"}.get(peft_type, peft_type)


def mergeable(kind: str) -> bool:
    return kind in ("lora", "ia3", "full")


UNMERGEABLE_NOTE = (
    "Not merged: {method} does not change the base model's weights. It adds learned virtual "
    "tokens in front of every input, so there is nothing to fold into the weights; the "
    "adapter is exported on its own and loads with PEFT on top of the base model. vLLM's "
    "LoRA support does not load it."
)


def export_adapter(adapter_dir: Path, out_dir: Path, *, card: dict[str, Any]) -> ExportResult:
    """The adapter in PEFT format with its tokenizer files and a model card."""
    kind = adapter_kind(adapter_dir)
    if kind == "full":
        raise ExportError(
            "This job fine-tuned every weight: there is no adapter to export; export it merged."
        )
    staging = _staging(out_dir)
    try:
        for path in adapter_dir.iterdir():
            if path.is_file():
                shutil.copy2(path, staging / path.name)
        missing = [f for f in ADAPTER_FILES if not (staging / f).is_file()]
        if missing:
            raise ExportError(f"The job's adapter is incomplete: {', '.join(missing)} missing.")
        note = None if mergeable(kind) else UNMERGEABLE_NOTE.format(method=_title(kind))
        text = model_card(
            {
                "folder_name": out_dir.name,
                **card,
                "export": "adapter",
                "note": note,
                "adapter_kind": kind,
            }
        )
        (staging / "README.md").write_text(text, encoding="utf-8")
        return _finish(staging, out_dir, "adapter", note=note, card=text)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def export_merged(
    base_model: str,
    adapter_dir: Path,
    out_dir: Path,
    *,
    model_cache_dir: Path,
    card: dict[str, Any],
    dtype: str = "auto",
    prompts: Sequence[Sequence[Message]] = (),
    allow_downloads: bool = False,
    trust_remote_code: bool = False,
    should_stop: Callable[[], bool] = lambda: False,
) -> ExportResult:
    """Base + adapter merged into one standalone model (safetensors, tokenizer, chat template,
    generation config), checked against base + adapter before it is kept.

    ``should_stop`` is asked between the long phases (load, merge, save, check); when it says
    yes the export is abandoned (TrainingCancelled) and nothing of it is left behind."""

    def stop_if_asked() -> None:
        if should_stop():
            raise TrainingCancelled("The export was stopped")

    kind = adapter_kind(adapter_dir)
    if not mergeable(kind):
        raise ExportError(UNMERGEABLE_NOTE.format(method=_title(kind)))
    device, chosen = models.pick_device_and_dtype("auto")
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    weights_dtype = torch_dtype.get(dtype, chosen)
    staging = _staging(out_dir)
    try:
        tokenizer = _tokenizer(adapter_dir, base_model, model_cache_dir, allow_downloads)
        ensure_chat_template(tokenizer)
        encoded = [
            tokenizer(
                render(tokenizer, p, generation_prompt=True),
                return_tensors="pt",
                add_special_tokens=False,
            )
            for p in (list(prompts) or DEFAULT_PROMPTS)
        ]
        # Merged and checked in float32 whatever the stored dtype: the check then sees the one
        # rounding the export adds (each merged weight to bf16/fp16), not the rounding of every
        # activation, which on a deep model is noise larger than any merge mistake.
        if kind == "full":
            merged = _load(adapter_dir, torch.float32, device, trust_remote_code)
            reference = None
        else:
            from peft import PeftModel

            resolved = models.resolve_model(
                base_model, model_cache_dir, allow_downloads, trust_remote_code=trust_remote_code
            )
            # A QLoRA adapter is merged into the base at full precision (de-quantised): the
            # 4-bit base it trained on only approximates these weights.
            base = models.load_model(
                resolved, dtype=torch.float32, device=device, trust_remote_code=trust_remote_code
            )
            stop_if_asked()
            adapted = PeftModel.from_pretrained(base, str(adapter_dir))
            adapted.eval()
            reference = _logits(adapted, encoded)
            merged = adapted.merge_and_unload()
        stop_if_asked()
        merged.to(weights_dtype).save_pretrained(str(staging), safe_serialization=True)
        tokenizer.save_pretrained(str(staging))
        if merged.generation_config is not None:
            merged.generation_config.save_pretrained(str(staging))
        del merged
        stop_if_asked()
        verification = None
        if reference is not None:
            # Read back what will ship, with nothing but transformers.
            shipped = _load(staging, torch.float32, device, trust_remote_code)
            verification = _compare(reference, _logits(shipped, encoded), weights_dtype)
            del shipped
            if not verification["passed"]:
                raise ExportError(
                    "The merged model does not match base + adapter: logits differ by "
                    f"{verification['max_relative_difference']:.2e} (relative), more than the "
                    f"{verification['tolerance']:.0e} allowed; the export was not kept."
                )
        text = model_card(
            {
                "folder_name": out_dir.name,
                **card,
                "export": "merged",
                "adapter_kind": kind,
                "verification": verification,
                "dtype": str(weights_dtype).removeprefix("torch."),
            }
        )
        (staging / "README.md").write_text(text, encoding="utf-8")
        stop_if_asked()
        return _finish(staging, out_dir, "merged", verification=verification, card=text)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _title(kind: str) -> str:
    return {"prefix_tuning": "prefix-tuning", "p_tuning": "P-tuning"}.get(kind, kind)


def _tokenizer(adapter_dir: Path, base_model: str, cache: Path, downloads: bool) -> Any:
    from transformers import AutoTokenizer

    if (adapter_dir / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(str(adapter_dir))
    return models.load_tokenizer(models.resolve_model(base_model, cache, downloads))


def _load(folder: Path, dtype: torch.dtype, device: torch.device, trust: bool) -> Any:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(folder),
        dtype=dtype,
        device_map={"": str(device)},
        trust_remote_code=trust,
        use_safetensors=True,
    )
    model.eval()
    return model


def _logits(model: Any, encoded: list[Any]) -> list[torch.Tensor]:
    device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for batch in encoded:
            out.append(model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu())
    return out


def _compare(
    reference: list[torch.Tensor], merged: list[torch.Tensor], dtype: torch.dtype
) -> dict[str, Any]:
    worst = 0.0
    same_top = total = 0
    for ref, got in zip(reference, merged, strict=True):
        scale = float(ref.abs().max()) + 1e-6
        worst = max(worst, float((ref - got).abs().max()) / scale)
        same_top += int((ref.argmax(-1) == got.argmax(-1)).sum())
        total += ref.shape[0] * ref.shape[1]
    tolerance = TOLERANCE.get(dtype, 3e-2)
    return {
        "prompts": len(reference),
        "positions": total,
        "max_relative_difference": worst,
        "same_next_token": same_top / max(total, 1),
        "tolerance": tolerance,
        "passed": worst <= tolerance,
    }


def discard_export(out_dir: Path) -> None:
    """Remove everything an export attempt may have left: its folder, its .tar, and any
    half-written staging folder or archive (a worker that died or was stopped mid-way)."""
    shutil.rmtree(out_dir, ignore_errors=True)
    archive = out_dir.with_suffix(".tar")
    archive.unlink(missing_ok=True)
    archive.with_name(f".{archive.name}.partial").unlink(missing_ok=True)
    if out_dir.parent.is_dir():
        for leftover in out_dir.parent.glob(f".{out_dir.name}.*"):
            shutil.rmtree(leftover, ignore_errors=True)


def discard_earlier_attempts(out_dir: Path) -> None:
    """Remove what earlier attempts of this export left: a worker killed mid-way leaves a
    staging folder or a partial archive that was never reported and that nothing else
    removes. ``out_dir`` is this attempt's folder, named ``<kind>-<id>-<attempt>``."""
    stem, _, number = out_dir.name.rpartition("-")
    if not number.isdigit():
        return
    for earlier in range(1, int(number)):
        discard_export(out_dir.with_name(f"{stem}-{earlier}"))


def _staging(out_dir: Path) -> Path:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if out_dir.exists():
        raise ExportError(f"{out_dir} already exists.")
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    staging.chmod(0o755)
    return staging


def _finish(
    staging: Path,
    out_dir: Path,
    kind: Kind,
    *,
    verification: dict[str, Any] | None = None,
    note: str | None = None,
    card: str = "",
) -> ExportResult:
    """Move the checked folder into place and pack it into one .tar (uncompressed: weights
    do not compress, and a plain file serves HTTP range requests)."""
    archive = out_dir.with_suffix(".tar")
    partial = archive.with_name(f".{archive.name}.partial")
    with tarfile.open(partial, "w") as tar:
        for path in sorted(staging.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=f"{out_dir.name}/{path.relative_to(staging)}")
    staging.rename(out_dir)
    partial.rename(archive)
    files = sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if p.is_file())
    size = sum((out_dir / f).stat().st_size for f in files)
    return ExportResult(kind, out_dir, archive, files, size, verification, note, card)
