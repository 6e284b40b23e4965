"""Placement: which workers can run which work, as Celery queue names both sides compute.

A worker advertises its capacity (``Capacity``): GPUs, their name and memory, whether it can
load 4-bit weights. Work is put on the queue of the smallest *class* it needs (``Needs``):
``<base>.gpu-24g`` (one GPU with 24 GB), ``<base>.gpu-80g-x2`` (two of 80 GB each),
``<base>.gpu-24g-4bit`` (QLoRA), ``<base>.cpu`` (a cluster of CPU workers). A worker consumes
the queue of every class it satisfies, so the broker hands a job only to a worker that can run
it, and the smallest class that fits leaves bigger cards free for bigger work. ``<base>`` is
the default queue (``TUNELAB_DEFAULT_QUEUE``), so two installations on one broker never share
classes.

Memory classes are the sizes cards are sold with; a card counts as the largest class within
10% above what it reports (an H100 reports 79.1 GiB: class 80).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

# GB (as cards are sold) of the memory classes, smallest first.
MEMORY_CLASSES = (8, 16, 24, 32, 40, 48, 80, 96, 141, 192)
# GPU counts a job can ask for beyond one: what torchrun runs on one host.
GPU_COUNTS = (1, 2, 4, 8)
# A card reports somewhat less than the size it is sold with (GiB against GB, the driver's
# reservation): within this share it counts as that class.
CARD_SLACK = 1.10
CPU = "cpu"


@dataclass(frozen=True)
class Capacity:
    """What one worker has. ``gpus`` 0: trains on its CPU."""

    gpus: int = 0
    gpu_name: str | None = None
    gpu_memory_gb: float = 0.0  # per GPU, as the device reports it (GiB)
    four_bit: bool = False  # bitsandbytes with CUDA: can train QLoRA
    cpu_threads: int = 1

    @property
    def cuda(self) -> bool:
        return self.gpus > 0

    @property
    def memory_class(self) -> int | None:
        """The largest memory class the worker's cards count as; None without GPUs (or with
        cards smaller than the smallest class)."""
        if not self.gpus:
            return None
        fitting = [c for c in MEMORY_CLASSES if c <= self.gpu_memory_gb * CARD_SLACK]
        return fitting[-1] if fitting else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "cuda": self.cuda, "memory_class": self.memory_class}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Capacity:
        return cls(
            gpus=int(data.get("gpus") or 0),
            gpu_name=data.get("gpu_name"),
            gpu_memory_gb=float(data.get("gpu_memory_gb") or 0.0),
            four_bit=bool(data.get("four_bit")),
            cpu_threads=int(data.get("cpu_threads") or 1),
        )


@dataclass(frozen=True)
class Needs:
    """What one piece of work needs. ``memory_gb`` None: not known (no estimate), any GPU."""

    gpu: bool = True
    memory_gb: float | None = None  # per GPU
    gpus: int = 1
    four_bit: bool = False

    @property
    def memory_class(self) -> int | None:
        """The smallest class with room for the work; None when larger than every class."""
        if not self.gpu:
            return None
        if self.memory_gb is None:
            return MEMORY_CLASSES[0]
        return next((c for c in MEMORY_CLASSES if self.memory_gb <= c), None)

    @property
    def gpu_count(self) -> int | None:
        """The smallest GPU count class covering ``gpus``; None when beyond the largest."""
        return next((n for n in GPU_COUNTS if self.gpus <= n), None)


def class_name(memory: int, gpus: int = 1, four_bit: bool = False) -> str:
    return f"gpu-{memory}g" + (f"-x{gpus}" if gpus > 1 else "") + ("-4bit" if four_bit else "")


def queue_name(base: str, klass: str) -> str:
    return f"{base}.{klass}"


def queue_for(base: str, needs: Needs) -> str | None:
    """The queue of the smallest class that fits ``needs``; None when no class could."""
    if not needs.gpu:
        return queue_name(base, CPU)
    memory, count = needs.memory_class, needs.gpu_count
    if memory is None or count is None:
        return None
    return queue_name(base, class_name(memory, count, needs.four_bit))


def queues_for(base: str, capacity: Capacity) -> list[str]:
    """Every class queue a worker with ``capacity`` can serve, smallest first. A CPU worker
    serves the CPU class alone."""
    top = capacity.memory_class
    if top is None:
        return [queue_name(base, CPU)]
    out = []
    for count in (n for n in GPU_COUNTS if n <= capacity.gpus):
        for memory in (c for c in MEMORY_CLASSES if c <= top):
            out.append(queue_name(base, class_name(memory, count)))
            if capacity.four_bit:
                out.append(queue_name(base, class_name(memory, count, four_bit=True)))
    return out


def parse_queue(base: str, queue: str) -> Needs | None:
    """The needs a class queue stands for; None for a queue that is not a class of ``base``
    (the default queue itself, or one named by hand)."""
    prefix = base + "."
    if not queue.startswith(prefix):
        return None
    klass = queue[len(prefix) :]
    if klass == CPU:
        return Needs(gpu=False)
    parts = klass.split("-")
    if len(parts) < 2 or parts[0] != "gpu" or not parts[1].endswith("g"):
        return None
    try:
        memory = int(parts[1][:-1])
        gpus = int(parts[2][1:]) if len(parts) > 2 and parts[2].startswith("x") else 1
    except ValueError:
        return None
    return Needs(memory_gb=float(memory), gpus=gpus, four_bit=parts[-1] == "4bit")


def job_gpus(config: dict[str, Any]) -> int:
    """The GPU count a job's config asks for: ``gpus`` (1 when absent or "auto")."""
    value = config.get("gpus", 1)
    if isinstance(value, bool):
        return 1
    if isinstance(value, int):
        return max(1, value)
    if isinstance(value, list | tuple):  # device ids
        return max(1, len(value))
    try:
        return max(1, int(str(value)))
    except ValueError:
        return 1


def gib(n_bytes: float) -> float:
    """Bytes in GiB, rounded up to a tenth."""
    return math.ceil(n_bytes / 2**30 * 10) / 10
