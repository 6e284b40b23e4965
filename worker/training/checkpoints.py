"""Resumable training checkpoints: everything a run needs to carry on exactly where it was.

A checkpoint is a folder ``checkpoint-<step>`` holding

- ``trainable.safetensors``: every parameter that trains (LoRA's A and B, a prompt encoder,
  or the whole model for full fine-tuning), by name, so one format serves every method;
- ``training.pt``: the optimiser's and the scheduler's state and the torch RNG states (CPU and
  each CUDA device), loaded back with ``weights_only=True`` so a checkpoint cannot run code;
- ``state.json``: the step, the position in the data (epoch and the index of the next batch
  in that epoch's shuffled order), the Python and NumPy RNG states, the running totals, the
  early-stopping bookkeeping, and fingerprints of the config and the training samples.

The data order is a pure function of (seed, epoch) (see ``data.make_batches``), so the epoch
and batch index are enough to rebuild it; together with the RNG states (dropout) and the
optimiser moments, a resumed run on the CPU repeats the uninterrupted run's losses exactly.

Every checkpoint is written to a hidden staging folder beside its final name, synced, and
renamed into place: a process killed mid-write leaves only a staging folder, which
``latest_checkpoint`` never picks and a later prune removes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import shutil
import tempfile
import time
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from worker.spec.config import TrainConfig
from worker.spec.errors import TrainingError
from worker.spec.formatting import Sample

PREFIX = "checkpoint-"
WEIGHTS_FILE = "trainable.safetensors"
TRAINING_FILE = "training.pt"
STATE_FILE = "state.json"
FORMAT = 1
# Staging folders older than this were left by a process that died mid-write.
_STALE_STAGING_SECONDS = 3600
# Settings that decide when to evaluate or save, not what is trained: a run may resume under
# different values of these and still repeat the same steps.
_SCHEDULE_ONLY = frozenset(
    {
        "checkpoint_every",
        "keep_checkpoints",
        "eval_every",
        "early_stopping_patience",
        "early_stopping_min_delta",
        "trust_remote_code",
        "allow_pickle_weights",
        # The same global batch on any number of GPUs: a run may resume on another count.
        "gpus",
        # How a step is split into passes does not change its gradient (every pass's loss is
        # divided by the whole step's answer tokens): a sharded run that ran out of memory
        # resumes at half the budget (distributed).
        "micro_batch_tokens",
    }
)


class IncompatibleCheckpoint(TrainingError):
    """The checkpoint cannot carry this run on: unreadable, or made by another run."""


@dataclass
class LoopState:
    """Where the step loop is; saved in every checkpoint and restored on resume."""

    step: int = 0
    epoch: int = 0  # the epoch the next step draws from
    batch_index: int = 0  # index of the next step's first batch in that epoch's order
    tokens: int = 0
    train_seconds: float = 0.0
    loss: float = math.nan  # the last step's
    best_val_loss: float | None = None
    best_step: int | None = None
    # Early stopping counts evaluations since the validation loss last beat this reference by
    # more than min_delta; the reference moves only on such an improvement (so a run of tiny
    # improvements still runs out of patience).
    reference_val_loss: float | None = None
    evals_without_improvement: int = 0

    def record_validation(self, loss: float, step: int, min_delta: float) -> None:
        """Update the best loss and the early-stopping count with one evaluation."""
        if self.best_val_loss is None or loss < self.best_val_loss:
            self.best_val_loss, self.best_step = loss, step
        if self.reference_val_loss is None or loss < self.reference_val_loss - min_delta:
            self.reference_val_loss = loss
            self.evals_without_improvement = 0
        else:
            self.evals_without_improvement += 1


@dataclass(frozen=True)
class Restored:
    """A loaded checkpoint: its loop state, and the RNG states to install last."""

    path: Path
    state: LoopState
    python_rng: Any
    numpy_rng: Any
    torch_rng: torch.Tensor
    cuda_rng: list[torch.Tensor]
    # Each process's torch RNG states in a multi-process run, by rank (rank 0's are above).
    rank_rng: list[dict[str, Any]] | None = None

    def restore_rng(self, rank: int = 0, world: int = 1) -> None:
        """Put every random generator back as it was when the checkpoint was taken. Called
        right before the first resumed step, after everything that might draw from them.
        Process ``rank`` of a multi-process run of as many processes as the one that saved
        takes its own states back (its dropout masks repeat); with another number, rank 0's."""
        random.setstate(self.python_rng)
        torch.set_rng_state(self.torch_rng)
        # A machine with another number of GPUs keeps its own CUDA states (CPU runs repeat
        # exactly regardless).
        if self.cuda_rng and len(self.cuda_rng) == _cuda_devices():
            torch.cuda.set_rng_state_all(self.cuda_rng)
        if self.rank_rng and len(self.rank_rng) == world and rank:
            own = self.rank_rng[rank]
            torch.set_rng_state(own["torch"])
            if own.get("cuda") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state(own["cuda"])
        if self.numpy_rng is not None:
            with contextlib.suppress(ImportError):
                import numpy

                numpy.random.set_state(self.numpy_rng)


def _cuda_devices() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def checkpoint_step(path: Path) -> int | None:
    """The step of a checkpoint folder's name, or None for anything else."""
    name = path.name
    if not name.startswith(PREFIX) or not name[len(PREFIX) :].isdigit():
        return None
    return int(name[len(PREFIX) :])


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    found = [
        (step, path)
        for path in directory.iterdir()
        if (step := checkpoint_step(path)) is not None and (path / STATE_FILE).is_file()
    ]
    return [path for _, path in sorted(found)]


def latest_checkpoint(directory: Path) -> Path | None:
    """The newest complete checkpoint in ``directory``, if any."""
    found = list_checkpoints(directory)
    return found[-1] if found else None


def samples_fingerprint(samples: Sequence[Sample]) -> str:
    """A hash of the encoded training samples: resuming on other data would be a new run."""
    digest = hashlib.sha256()
    for sample in samples:
        digest.update(array("q", sample.input_ids).tobytes())
        digest.update(b"\x00")
        digest.update(array("q", sample.labels).tobytes())
        digest.update(b"\x01")
    return digest.hexdigest()


def config_fingerprint(config: TrainConfig) -> dict[str, Any]:
    """The settings a resumed run must share with the run that saved the checkpoint."""
    return {
        name: value
        for name, value in config.model_dump(mode="json").items()
        if name not in _SCHEDULE_ONLY
    }


def save_checkpoint(
    directory: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: LoopState,
    config: TrainConfig,
    samples_hash: str,
    keep: int,
    rank_rng: list[dict[str, Any]] | None = None,
    whole: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None,
) -> Path | None:
    """Write the checkpoint of ``state.step`` atomically, then keep only the newest ``keep``.
    ``rank_rng``: every process's RNG states in a multi-process run (``ranks.gather_rng``);
    ``whole``: the trained weights and the optimiser state gathered whole where they are
    sharded (``ranks.Sharded.full_state``), written instead of the model's and optimiser's.

    Returns its folder, or None when a checkpoint of that step was already there (written by
    an earlier attempt of the same job): that one is left as it is.
    """
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{PREFIX}{state.step}"
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=directory))
    try:
        weights = (
            {name: tensor.contiguous() for name, tensor in whole[0].items()}
            if whole is not None
            else {
                name: param.detach().contiguous()
                for name, param in model.named_parameters()
                if param.requires_grad
            }
        )
        save_file(weights, str(staging / WEIGHTS_FILE))
        training = {
            "optimizer": whole[1] if whole is not None else optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        }
        if rank_rng:
            training["rank_rng"] = rank_rng
        with (staging / TRAINING_FILE).open("wb") as fh:
            torch.save(training, fh)
        meta = {
            "format": FORMAT,
            "loop": asdict(state),
            "python_rng": _python_rng_to_json(random.getstate()),
            "numpy_rng": _numpy_rng_to_json(),
            "config": config_fingerprint(config),
            "samples": samples_hash,
            "saved_at": time.time(),
        }
        (staging / STATE_FILE).write_text(json.dumps(meta), encoding="utf-8")
        _sync_folder(staging)
        try:
            staging.rename(final)
        except OSError:
            if not (final / STATE_FILE).is_file():
                raise
            return None
        staging = final
        _fsync_dir(directory)
        return final
    finally:
        if staging != final:
            shutil.rmtree(staging, ignore_errors=True)
        prune_checkpoints(directory, keep=keep)


def prune_checkpoints(directory: Path, *, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints, and stale staging folders."""
    removed = list_checkpoints(directory)[:-keep] if keep > 0 else []
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    now = time.time()
    for path in directory.glob(f".{PREFIX}*"):
        with contextlib.suppress(OSError):
            if now - path.stat().st_mtime > _STALE_STAGING_SECONDS:
                shutil.rmtree(path, ignore_errors=True)
    return removed


def load_checkpoint(
    path: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    config: TrainConfig,
    samples_hash: str,
) -> Restored:
    """Load a checkpoint into the model's trainable parameters, the optimiser and the
    scheduler; the RNG states come back in ``Restored`` to be installed last."""
    from safetensors.torch import load_file

    state_file = path / STATE_FILE
    if not state_file.is_file():
        raise IncompatibleCheckpoint(f"{path} is not a checkpoint: it has no {STATE_FILE}.")
    try:
        meta = json.loads(state_file.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise IncompatibleCheckpoint(f"The checkpoint {path} cannot be read ({exc}).") from exc
    if meta.get("format") != FORMAT:
        raise IncompatibleCheckpoint(
            f"The checkpoint {path} was written by another tunelab version."
        )
    _check_same_run(path, meta, config, samples_hash)

    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    device = next(iter(params.values())).device if params else torch.device("cpu")
    try:
        weights = load_file(str(path / WEIGHTS_FILE), device=str(device))
        training = torch.load(path / TRAINING_FILE, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or damaged files: safetensors, pickle or OS errors
        raise IncompatibleCheckpoint(f"The checkpoint {path} cannot be read ({exc}).") from exc
    if set(weights) != set(params):
        raise IncompatibleCheckpoint(
            f"The checkpoint {path} holds other trainable weights than this run creates "
            f"({len(weights)} saved, {len(params)} here); it belongs to another run."
        )
    from worker.training.ranks import shard_like

    with torch.no_grad():
        for name, param in params.items():
            param.copy_(shard_like(weights[name], param))
    optimizer.load_state_dict(_sharded_like_params(training["optimizer"], optimizer))
    scheduler.load_state_dict(training["scheduler"])
    known = {f.name for f in fields(LoopState)}
    state = LoopState(**{k: v for k, v in meta["loop"].items() if k in known})
    return Restored(
        path=path,
        state=state,
        python_rng=_python_rng_from_json(meta["python_rng"]),
        numpy_rng=_numpy_rng_from_json(meta.get("numpy_rng")),
        torch_rng=training["torch_rng"],
        cuda_rng=list(training["cuda_rng"]),
        rank_rng=training.get("rank_rng"),
    )


def _sharded_like_params(state: dict[str, Any], optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """A saved optimiser state (whole tensors) cut as the optimiser's parameters are sharded
    (full fine-tuning over several processes); as it is otherwise."""
    from worker.training.ranks import shard_like

    params = [p for group in optimizer.param_groups for p in group["params"]]
    if not any(getattr(p, "device_mesh", None) is not None for p in params):
        return state
    cut = {}
    for index, values in state["state"].items():
        param = params[int(index)]
        cut[index] = {
            key: shard_like(value, param)
            if isinstance(value, torch.Tensor) and value.shape == param.shape
            else value
            for key, value in values.items()
        }
    return {**state, "state": cut}


def _check_same_run(path: Path, meta: dict[str, Any], config: TrainConfig, samples: str) -> None:
    saved, here = meta.get("config", {}), config_fingerprint(config)
    # Settings one side lacks are those a newer (or older) tunelab added or removed between
    # attempts, e.g. across a deploy; their defaults keep the old behaviour.
    changed = sorted(k for k in saved.keys() & here.keys() if saved[k] != here[k])
    if changed:
        raise IncompatibleCheckpoint(
            f"The checkpoint {path} was made with other settings ({', '.join(changed)}); "
            "resume with the run's original config or start a new run."
        )
    if meta.get("samples") != samples:
        raise IncompatibleCheckpoint(
            f"The checkpoint {path} was made on other training data; resume with the run's "
            "original data or start a new run."
        )


def _python_rng_to_json(state: tuple[Any, ...]) -> list[Any]:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _python_rng_from_json(value: list[Any]) -> tuple[Any, ...]:
    version, internal, gauss = value
    return (version, tuple(internal), gauss)


def _numpy_rng_to_json() -> list[Any] | None:
    try:
        import numpy
    except ImportError:
        return None
    kind, keys, pos, has_gauss, cached = numpy.random.get_state(legacy=True)
    return [kind, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)]


def _numpy_rng_from_json(value: list[Any] | None) -> Any:
    if value is None:
        return None
    try:
        import numpy
    except ImportError:
        return None
    kind, keys, pos, has_gauss, cached = value
    return (kind, numpy.array(keys, dtype=numpy.uint32), pos, has_gauss, cached)


def _sync_folder(folder: Path) -> None:
    # Data reaches the disk before the rename that publishes it, so a power cut cannot leave
    # a complete-looking checkpoint with empty files.
    for path in _files(folder):
        with path.open("rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(folder)


def _files(folder: Path) -> Iterable[Path]:
    return (p for p in folder.iterdir() if p.is_file())


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
