"""A worker without CUDA measures its CPU once at start, so that estimates give CPU minutes
(``worker.spec.cpu_time``). The measurement goes into the data folder, which the web process
reads (embedded mode shares it; cluster workers without GPUs need the folder shared too)."""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery.signals import worker_ready

from app.core.config import get_settings
from worker.spec.cpu_time import write_calibration

log = logging.getLogger(__name__)


def measure_and_record() -> dict[str, object] | None:
    """Time this CPU and write the result; None on a CUDA worker (GPU estimates apply)."""
    import torch

    from worker.training import cpu

    if torch.cuda.is_available():
        return None
    measured = cpu.calibrate()
    write_calibration(get_settings().data_dir, measured)
    log.info("CPU calibration: %s", measured)
    return measured


def _measure_quietly() -> None:
    try:
        measure_and_record()
    except Exception:  # an estimate without a measurement says so; the worker carries on
        log.exception("CPU calibration failed")


@worker_ready.connect
def _calibrate_on_start(**_: Any) -> None:
    threading.Thread(target=_measure_quietly, name="cpu-calibration", daemon=True).start()
