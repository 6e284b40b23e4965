"""Where a profiled training step's GPU waited, from a Chrome trace of
``bench/train_throughput.py --profile --trace DIR``.

    python bench/trace_gaps.py DIR/qwen2.5-0.5b-0.json.gz

Prints, over the profiled steps:

- the GPU's busy time against the wall time, and its idle time in gaps of 20 us or more;
- the launch lag: how long after its launch call each kernel started. A GPU that keeps up
  with the host starts kernels a few microseconds after their launch (the host sets the
  pace); one with a queue starts them long after (the GPU sets it);
- the idle gaps summed by what the host was doing as each began: the outermost and the
  innermost operator running on the host's main thread at that moment (an optimiser step,
  a ``.item()`` waiting for the GPU, an autograd function's backward, ...);
- the host's time in its outermost operators, the step's phases as the profiler saw them.

It reads the trace only: nothing here needs a GPU.
"""

from __future__ import annotations

import argparse
import bisect
import gzip
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

GAP_US = 20.0
GPU_CATEGORIES = {"kernel", "gpu_memcpy", "gpu_memset"}
LAUNCH_CATEGORIES = {"cuda_runtime", "cuda_driver"}


def load(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        data = json.load(handle)
    events: list[dict[str, Any]] = data["traceEvents"] if isinstance(data, dict) else data
    return [e for e in events if e.get("ph") == "X" and "dur" in e]


def busy_union(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


class HostStack:
    """The host operators of one thread, to ask which were running at a moment."""

    def __init__(self, ops: list[dict[str, Any]]) -> None:
        self.ops = sorted(ops, key=lambda e: (e["ts"], -e["dur"]))
        self.starts = [e["ts"] for e in self.ops]

    def at(self, moment: float) -> list[dict[str, Any]]:
        """The operators running at ``moment``, outermost first."""
        found = []
        # Operators nest, so scanning back from the last start before the moment finds all
        # that enclose it; a few thousand back is plenty for one step's nesting.
        index = bisect.bisect_right(self.starts, moment)
        for e in reversed(self.ops[max(0, index - 4000) : index]):
            if e["ts"] <= moment < e["ts"] + e["dur"]:
                found.append(e)
        return sorted(found, key=lambda e: (e["ts"], -e["dur"]))


def short(name: str, width: int = 70) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def analyse(path: Path, top: int) -> None:
    events = load(path)
    steps = sorted(
        (e for e in events if str(e.get("name", "")).startswith("ProfilerStep")),
        key=lambda e: e["ts"],
    )
    if steps:
        window = (steps[0]["ts"], steps[-1]["ts"] + steps[-1]["dur"])
    else:
        window = (min(e["ts"] for e in events), max(e["ts"] + e["dur"] for e in events))

    def inside(e: dict[str, Any]) -> bool:
        return bool(window[0] <= e["ts"] <= window[1])

    gpu = [e for e in events if e.get("cat") in GPU_CATEGORIES and inside(e)]
    launches = {
        e["args"].get("correlation"): e
        for e in events
        if e.get("cat") in LAUNCH_CATEGORIES and "args" in e
    }
    host_ops = [e for e in events if e.get("cat") in {"cpu_op", "user_annotation"}]
    by_thread: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for e in host_ops:
        by_thread[e.get("tid")].append(e)
    # The main thread: the one with the most operator time inside the window (the autograd
    # engine's backward runs on a thread of its own on a GPU; both are looked at).
    threads = sorted(by_thread, key=lambda t: -sum(e["dur"] for e in by_thread[t] if inside(e)))[:2]
    stacks = {t: HostStack(by_thread[t]) for t in threads}

    wall = window[1] - window[0]
    spans = busy_union([(e["ts"], e["ts"] + e["dur"]) for e in gpu])
    busy = sum(end - start for start, end in spans)
    print(f"{path.name}: {len(steps)} profiled steps, wall {wall / 1e3:.1f} ms")
    print(
        f"GPU busy {busy / 1e3:.1f} ms ({busy / wall:.0%}), {len(gpu)} kernels and copies, "
        f"mean {busy / max(1, len(gpu)):.1f} us each"
    )

    lags = []
    for e in gpu:
        launch = launches.get(e.get("args", {}).get("correlation"))
        if launch is not None:
            lags.append(e["ts"] - (launch["ts"] + launch["dur"]))
    if lags:
        lags.sort()
        starved = sum(1 for lag in lags if lag < 15.0) / len(lags)
        print(
            f"launch lag: median {lags[len(lags) // 2]:.0f} us, 90th {lags[len(lags) * 9 // 10]:.0f} "
            f"us; {starved:.0%} of kernels started within 15 us of their launch (GPU waiting "
            "on the host)"
        )

    gaps = []
    previous_end = window[0]
    for start, end in spans:
        if start - previous_end >= GAP_US:
            gaps.append((previous_end, start))
        previous_end = max(previous_end, end)
    if window[1] - previous_end >= GAP_US:
        gaps.append((previous_end, window[1]))
    idle = sum(b - a for a, b in gaps)
    print(f"GPU idle in gaps of {GAP_US:.0f} us or more: {idle / 1e3:.1f} ms in {len(gaps)} gaps")

    by_cause: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for a, b in gaps:
        causes = []
        for thread in threads:
            running = stacks[thread].at(a + 1.0)
            running = [e for e in running if not str(e["name"]).startswith("ProfilerStep")]
            if running:
                outer, inner = running[0]["name"], running[-1]["name"]
                causes.append(outer if outer == inner else f"{outer} > {inner}")
        key = " | ".join(short(c, 90) for c in causes) or "(no host operator)"
        by_cause[key][0] += b - a
        by_cause[key][1] += 1
    print(f"\nidle gaps by what the host was running as they began (top {top}):")
    for key, (total, count) in sorted(by_cause.items(), key=lambda item: -item[1][0])[:top]:
        print(f"  {total / 1e3:8.2f} ms  {count:5.0f} gaps  {key}")

    for thread in threads:
        outer: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        ops = sorted(
            (
                e
                for e in by_thread[thread]
                if inside(e) and not e["name"].startswith("ProfilerStep")
            ),
            key=lambda e: (e["ts"], -e["dur"]),
        )
        end = -1.0
        for e in ops:
            if e["ts"] >= end:  # not inside the previous outermost operator
                outer[e["name"]][0] += e["dur"]
                outer[e["name"]][1] += 1
                end = e["ts"] + e["dur"]
        total = sum(v[0] for v in outer.values())
        print(
            f"\nhost thread {thread}: outermost operators {total / 1e3:.1f} ms of the "
            f"{wall / 1e3:.1f} ms wall (top {top}):"
        )
        for name, (ms, count) in sorted(outer.items(), key=lambda item: -item[1][0])[:top]:
            print(f"  {ms / 1e3:8.2f} ms  {count:6.0f}x  {short(name, 90)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("traces", type=Path, nargs="+")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    for path in args.traces:
        analyse(path, args.top)
        print()


if __name__ == "__main__":
    main()
