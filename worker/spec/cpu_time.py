"""What a CPU worker measured of itself, so that estimates give CPU minutes before queueing.

A worker without CUDA times a matrix product in the dtype it trains in, once at start
(``worker.training.cpu.calibrate``), and writes the result into the data folder
(``cpu-calibration.json``). The web process reads it back (embedded mode shares the folder)
and the estimate scales the run's FLOPs by it: the engine sustains ``engine_share`` of that
rate on a whole training step (measured by ``bench/cpu_train.py``; see the README's
"Training on a CPU").

Torch-free: the web process calls it.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

CALIBRATION_FILE = "cpu-calibration.json"
# The engine's training FLOPs per second over the calibration's matrix rate, by model size,
# measured with bench/cpu_train.py (LoRA r16, packed rows of 512 tokens, bfloat16, both
# threads of a 2-core AMD EPYC with AVX-512 BF16, 2026-12-05): SmolLM2-135M 216 of 902
# GFLOP/s, a Qwen2.5-0.5B shape 456 of 987 (on one thread: 0.32 and 0.56). Larger models'
# products are larger and run nearer the rate.
ENGINE_SHARE = ((135_000_000, 0.24), (494_000_000, 0.46))
# A matrix rate for CPUs not measured yet: a laptop's few cores in float32.
ASSUMED_GFLOPS = 100.0


@dataclass(frozen=True)
class CpuCalibration:
    matmul_gflops: float
    dtype: str
    threads: int
    processor: str
    measured_at: str = ""
    measured: bool = True

    def training_flops(self, params: int) -> float:
        """FLOPs per second a training step of a ``params``-parameter model sustains here."""
        return self.matmul_gflops * 1e9 * engine_share(params)

    def describe(self) -> str:
        if not self.measured:
            return (
                f"CPU not measured yet (start the worker once): {ASSUMED_GFLOPS:.0f} GFLOP/s "
                "assumed"
            )
        return (
            f"{self.processor}, {self.threads} threads, {self.matmul_gflops:.0f} GFLOP/s in "
            f"{self.dtype} (measured by the worker)"
        )


ASSUMED = CpuCalibration(ASSUMED_GFLOPS, "float32", 0, "unknown CPU", measured=False)


def read_calibration(data_dir: Path) -> CpuCalibration | None:
    """The calibration a worker wrote into ``data_dir``, or None."""
    try:
        raw = json.loads((Path(data_dir) / CALIBRATION_FILE).read_text(encoding="utf-8"))
        return CpuCalibration(
            matmul_gflops=float(raw["matmul_gflops"]),
            dtype=str(raw["dtype"]),
            threads=int(raw["threads"]),
            processor=str(raw.get("processor", "")),
            measured_at=str(raw.get("measured_at", "")),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_calibration(data_dir: Path, measured: dict[str, Any]) -> Path:
    """Write a worker's measurement atomically (readers never see half a file)."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    values = {**measured, "measured_at": datetime.now(UTC).isoformat(timespec="seconds")}
    CpuCalibration(**values)  # refuse what could not be read back
    handle, name = tempfile.mkstemp(prefix=".cpu-calibration.", dir=data_dir)
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        json.dump(values, out, indent=1)
    os.chmod(name, 0o644)
    final = data_dir / CALIBRATION_FILE
    os.replace(name, final)
    return final


def engine_share(params: int) -> float:
    """``ENGINE_SHARE`` at ``params``, log-linear between the measured sizes, held beyond."""
    (small, low), (large, high) = ENGINE_SHARE
    if params <= small:
        return low
    if params >= large:
        return high
    return low + (high - low) * math.log(params / small) / math.log(large / small)


def as_dict(calibration: CpuCalibration) -> dict[str, Any]:
    return asdict(calibration)
