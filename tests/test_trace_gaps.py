"""bench/trace_gaps.py on a small made-up Chrome trace: the GPU's busy and idle time, the
launch lag, and which host operator was running as each idle gap began. (The real traces come
from a GPU run of bench/train_throughput.py --profile --trace; this checks the reading.)"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from bench.trace_gaps import analyse


def _trace(path: Path) -> None:
    main, backward = 1, 2
    events = [
        {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#1", "ts": 0, "dur": 1000,
         "tid": main},
        # The host: a forward op with a launch inside, then a slow Python-side op, then the
        # backward thread's op that waits long before its launch.
        {"ph": "X", "cat": "cpu_op", "name": "_LoraLinear", "ts": 10, "dur": 300, "tid": main},
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": 20, "dur": 30, "tid": main},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": 40, "dur": 5,
         "tid": main, "args": {"correlation": 1}},
        {"ph": "X", "cat": "cpu_op", "name": "autograd::engine::evaluate_function: X",
         "ts": 400, "dur": 550, "tid": backward},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": 800, "dur": 5,
         "tid": backward, "args": {"correlation": 2}},
        # The GPU: two kernels, each started right after its launch (the host set the pace).
        {"ph": "X", "cat": "kernel", "name": "gemm", "ts": 47, "dur": 100, "tid": 7,
         "args": {"correlation": 1}},
        {"ph": "X", "cat": "kernel", "name": "gemm", "ts": 807, "dur": 100, "tid": 7,
         "args": {"correlation": 2}},
    ]  # fmt: skip
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        json.dump({"traceEvents": events}, handle)


def test_the_trace_reader_finds_the_idle_gaps_and_what_the_host_did(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.json.gz"
    _trace(path)
    analyse(path, top=5)
    out = capsys.readouterr().out
    assert "wall 1.0 ms" in out
    assert "GPU busy 0.2 ms (20%), 2 kernels" in out
    assert "100% of kernels started within 15 us" in out
    # Idle: 0-47, 147-807 and 907-1000 (all at least 20 us): 800 us in 3 gaps.
    assert "0.8 ms in 3 gaps" in out
    # The longest gap began inside _LoraLinear (main thread), with the backward not yet
    # running; the last began inside the backward thread's operator.
    lines = [line for line in out.splitlines() if " gaps  " in line]
    assert "_LoraLinear" in lines[0] and "0.66 ms" in lines[0]
    assert any("evaluate_function: X" in line and "0.09 ms" in line for line in lines)
    assert any("(no host operator)" in line and "0.05 ms" in line for line in lines)
    assert "host thread 2: outermost operators 0.6 ms" in out
