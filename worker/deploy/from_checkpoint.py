"""What a stopped run trained, as a model folder an export can ship: the newest training
checkpoint of a cancelled or failed job, turned into the adapter (or, for full fine-tuning,
the model) the run would have saved had it finished at that step.

A checkpoint stores the trainable parameters by name (see worker.training.checkpoints); the
adapter is rebuilt from the run's config on the base model and filled with them, then saved
with PEFT, as the engine saves a finished run. Runs on the CPU in float32: it is a copy of
weights, not training, and works on any worker.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from worker.spec.config import TrainConfig
from worker.spec.errors import TrainingCancelled, TrainingError
from worker.spec.formatting import ensure_chat_template
from worker.training import models
from worker.training.checkpoints import STATE_FILE, WEIGHTS_FILE


def save_trained_model(
    checkpoint: Path,
    train_config: dict[str, Any],
    out_dir: Path,
    *,
    model_cache_dir: Path,
    allow_downloads: bool = False,
    should_stop: Callable[[], bool] = lambda: False,
) -> Path:
    """Write the checkpoint's adapter (or whole model) and the tokenizer to ``out_dir``,
    which appears only once complete; returns it."""
    from safetensors.torch import load_file

    from worker.training.adapters import build_peft_config

    weights_file = checkpoint / WEIGHTS_FILE
    if not weights_file.is_file():
        raise TrainingError(f"The checkpoint {checkpoint.name} has no weights; it is incomplete.")
    # The job's config may leave fields to "auto"; the checkpoint holds what the run chose.
    state = checkpoint / STATE_FILE
    chosen = json.loads(state.read_text(encoding="utf-8"))["config"] if state.is_file() else {}
    config = TrainConfig.model_validate({**train_config, **chosen})
    resolved = models.resolve_model(
        config.base_model,
        model_cache_dir,
        allow_downloads,
        trust_remote_code=config.trust_remote_code,
        allow_pickle_weights=config.allow_pickle_weights,
    )
    model = models.load_model(
        resolved,
        dtype=torch.float32,
        device=torch.device("cpu"),
        trust_remote_code=config.trust_remote_code,
        allow_pickle_weights=config.allow_pickle_weights,
    )
    if should_stop():
        raise TrainingCancelled("The export was cancelled")
    tokenizer = models.load_tokenizer(resolved, trust_remote_code=config.trust_remote_code)
    ensure_chat_template(tokenizer)  # the template the run trained with, as it saved it
    peft_config = build_peft_config(config, model)
    if peft_config is not None:
        from peft import get_peft_model

        model = get_peft_model(model, peft_config)
    weights = load_file(str(weights_file))
    params = dict(model.named_parameters())
    missing = sorted(set(weights) - set(params))
    if missing:
        raise TrainingError(
            f"The checkpoint {checkpoint.name} does not fit the job's model ({len(missing)} "
            f"weights have no place, e.g. {missing[0]})."
        )
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value.to(dtype=params[name].dtype))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(str(staging), safe_serialization=True)
        tokenizer.save_pretrained(str(staging))
        staging.chmod(0o755)
        shutil.rmtree(out_dir, ignore_errors=True)
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir
