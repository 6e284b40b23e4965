"""What the engine tells its caller while it trains: the callbacks a caller passes to
``engine.train`` (or ``trainer.train_model``) and the metrics of each optimiser step. A module
of its own so the entry point and the step loop can both name them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass
class StepMetrics:
    step: int
    total_steps: int
    epoch: float
    loss: float
    learning_rate: float
    grad_norm: float  # total norm before clipping
    tokens_per_second: float
    tokens: int  # non-pad tokens processed in this optimiser step
    eta_seconds: float = 0.0  # the remaining steps at this process's mean time per step
    gpu_memory_bytes: int | None = None  # peak allocated on the GPU so far; None on the CPU
    val_loss: float | None = None  # set on the steps the validation loss was computed at


class TrainCallbacks(Protocol):
    def on_event(self, level: str, message: str, data: dict[str, Any] | None = None) -> None:
        """level is "info", "warning" or "error"; message is for people."""

    def on_step(self, metrics: StepMetrics) -> None: ...

    def should_stop(self) -> bool:
        """Polled before every optimiser step and between phases."""
        ...


def checkpoint_on_stop(callbacks: TrainCallbacks) -> bool:
    """Whether a run stopped through ``should_stop`` saves a checkpoint of the step it reached
    first. Only callbacks that say so (a job cancelled by its user: what it trained can be
    resumed or exported); never a worker that lost its job to another, which must write
    nothing more, nor callers that do not know the method."""
    asks = getattr(callbacks, "checkpoint_on_stop", None)
    return bool(asks()) if callable(asks) else False


class Silent:
    """The callbacks used when a caller passes none: nothing reported, never stopped."""

    def on_event(self, level: str, message: str, data: dict[str, Any] | None = None) -> None:
        pass

    def on_step(self, metrics: StepMetrics) -> None:
        pass

    def should_stop(self) -> bool:
        return False
