"""What this worker has, to advertise (``app.services.workers``) and to pick its queues by
(``worker.spec.placement``): detected, or declared through the environment
(TUNELAB_WORKER_GPUS, TUNELAB_WORKER_GPU_MEMORY_GB, TUNELAB_WORKER_GPU_NAME,
TUNELAB_WORKER_4BIT), which wins."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from app.core.config import Settings
from worker.spec.placement import Capacity, queues_for


def detect(settings: Settings) -> Capacity:
    gpus, name, memory = (
        settings.worker_gpus,
        settings.worker_gpu_name,
        settings.worker_gpu_memory_gb,
    )
    if gpus is None or (gpus > 0 and (memory is None or name is None)):
        found_gpus, found_name, found_memory = _cuda_devices()
        gpus = found_gpus if gpus is None else gpus
        name = name or found_name
        memory = memory if memory is not None else found_memory
    four_bit = settings.worker_4bit
    if four_bit is None:
        # QLoRA needs bitsandbytes and a CUDA device to load 4-bit weights on.
        four_bit = gpus > 0 and importlib.util.find_spec("bitsandbytes") is not None
    return Capacity(
        gpus=gpus,
        gpu_name=name if gpus else None,
        gpu_memory_gb=round(memory or 0.0, 1) if gpus else 0.0,
        four_bit=bool(four_bit and gpus),
        cpu_threads=os.cpu_count() or 1,
    )


def _cuda_devices() -> tuple[int, str | None, float | None]:
    """Visible CUDA devices: their count, and the first one's name and memory (GiB)."""
    try:
        import torch
    except ImportError:
        return 0, None, None
    if not torch.cuda.is_available():
        return 0, None, None
    props = torch.cuda.get_device_properties(0)
    return torch.cuda.device_count(), str(props.name), props.total_memory / 2**30


def class_queues(settings: Settings, capacity: Capacity) -> list[str]:
    """The capacity-class queues a worker adds to the one it was started with (the default
    queue: evaluations of base models, deployments, jobs made before placement): every class
    it satisfies, where jobs are placed and its queue was not named by hand."""
    if not settings.places_jobs or not settings.worker_class_queues:
        return []
    return queues_for(settings.default_queue, capacity)


def cached_models(settings: Settings) -> list[str]:
    """The model folders in the model cache (the names its subfolders have)."""
    folder: Path = settings.model_cache_dir
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
