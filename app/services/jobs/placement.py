"""Which queue a job goes to: the smallest capacity class its estimate needs
(``worker.spec.placement``), refused only when no worker could ever take it.

The class comes from the job alone (the estimate's memory per GPU, the GPU count it asks for,
4-bit weights for QLoRA), never from the workers online now: a job no online worker can run is
accepted and waits, saying why (``app.services.workers.waiting_reason``), until one starts.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.core.config import Settings
from app.core.errors import FieldError, InvalidInput
from app.models import DatasetVersion
from worker.spec.config import TrainConfig
from worker.spec.estimate import CUDA_CONTEXT_BYTES
from worker.spec.placement import MEMORY_CLASSES, Needs, gib, job_gpus, queue_for

TOO_MUCH_MEMORY = "this job needs about %(need)s GB per GPU, more than a worker here can have (at most %(most)s GB)"
TOO_MANY_GPUS = (
    "this job asks for %(need)s GPUs, more than a worker here can have (at most %(most)s)"
)


@dataclass(frozen=True)
class Placement:
    queue: str
    needs: Needs | None  # None: placement is off (embedded mode), the default queue


def job_needs(config: TrainConfig, *, settings: Settings, version: DatasetVersion | None) -> Needs:
    """What a job needs of its worker. Memory per GPU is the estimate's peak plus the CUDA
    context; unknown (any GPU) for a model without an estimate."""
    if not settings.workers_have_cuda:
        return Needs(gpu=False)
    from app.services.jobs.estimates import estimate_for, lengths_of_version

    memory: float | None = None
    try:
        lengths = lengths_of_version(version, base_model=config.base_model) if version else None
        # "auto" sizes the passes to the card, so the need is the smallest class on which
        # the run fits; beyond the largest, the peak it would have there.
        for klass in MEMORY_CLASSES:
            found = estimate_for(
                config, dataset=lengths, gpu_name=None, gpu_memory_bytes=klass * 2**30
            )
            if not found.get("available"):
                break
            memory = gib(int(found["peak_memory_bytes"]) + CUDA_CONTEXT_BYTES)
            if found["fits"]:
                break
    except InvalidInput:
        memory = None
    return Needs(
        gpu=True,
        memory_gb=memory,
        gpus=job_gpus(config.model_dump()),
        four_bit=config.method == "qlora",
    )


def place(config: TrainConfig, *, settings: Settings, version: DatasetVersion | None) -> Placement:
    """The queue for a new job; InvalidInput, naming the field, for one beyond what any worker
    could have (``TUNELAB_MAX_GPU_MEMORY_GB``, ``TUNELAB_MAX_GPUS``, the largest classes)."""
    if not settings.places_jobs:
        return Placement(settings.default_queue, None)
    needs = job_needs(config, settings=settings, version=version)
    refuse(needs, settings=settings)
    queue = queue_for(settings.default_queue, needs)
    assert queue is not None  # refuse() let through only what a class holds
    return Placement(queue, needs)


def refuse(needs: Needs, *, settings: Settings) -> None:
    if not needs.gpu:
        return
    most_gpus = settings.max_gpus or 8
    if needs.gpus > most_gpus or needs.gpu_count is None:
        message = TOO_MANY_GPUS % {"need": needs.gpus, "most": min(most_gpus, 8)}
        raise InvalidInput(message, errors=[FieldError(field="config.gpus", message=message)])
    most_memory = settings.max_gpu_memory_gb or MEMORY_CLASSES[-1]
    if needs.memory_gb is not None and (
        needs.memory_gb > most_memory or needs.memory_class is None
    ):
        message = TOO_MUCH_MEMORY % {
            "need": f"{needs.memory_gb:.0f}",
            "most": f"{min(most_memory, MEMORY_CLASSES[-1]):g}",
        }
        raise InvalidInput(message, errors=[FieldError(field="config", message=message)])
