"""A default run on a CPU, timed as a user would time it: `tunelab train` with `preset: quick`.

    python bench/cpu_default_run.py                 # 500 alpaca-en records of ~300 tokens
    python bench/cpu_default_run.py --records 100   # a shorter try

Picks the ``--records`` longest records of the shared alpaca-en demo set (by SmolLM2's
tokens once rendered with its chat template: about 300 on average for 500, the size of a
short dialogue-summary sample), writes them and a ``run.yaml`` that sets only the base model,
the method and ``preset: quick`` (everything else ``auto``, so the CPU rules choose), and runs
``tunelab train run.yaml`` in a process of its own. Prints one JSON line: the wall time from
start to the saved adapter (loading included), the optimiser steps, what ``auto`` chose, the
mean and range of the sample lengths and the child's peak resident memory (``ru_maxrss``).
Nothing is written outside a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

DATA = HERE.parents[1] / "shared" / "data" / "llamafactory-demo" / "alpaca_en_demo.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=500)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()

    records, lengths = longest_records(args.data, args.records, args.model)
    with tempfile.TemporaryDirectory(prefix="cpu-default-") as tmp:
        folder = Path(tmp)
        with (folder / "train.jsonl").open("w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        (folder / "run.yaml").write_text(
            f"base_model: {args.model}\nmethod: lora\npreset: {args.preset}\n"
            "data: train.jsonl\noutput: adapter\n",
            encoding="utf-8",
        )
        tunelab = Path(sys.executable).with_name("tunelab")
        started = time.perf_counter()
        done = subprocess.run(
            [str(tunelab), "train", str(folder / "run.yaml")],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        wall = time.perf_counter() - started
        saved = (folder / "adapter").is_dir()
    output = done.stdout + done.stderr
    steps = re.findall(r"\| (\d+)/(\d+) \[", output)  # the progress bar's "| 12/63 ["
    chosen = re.search(r"Chosen automatically: ([^\n]*)", output)
    line: dict[str, Any] = {
        "records": len(records),
        "mean_tokens": round(sum(lengths) / len(lengths), 1),
        "min_tokens": min(lengths),
        "max_tokens": max(lengths),
        "preset": args.preset,
        "exit_code": done.returncode,
        "adapter_saved": saved,
        "wall_minutes": round(wall / 60, 2),
        "steps": int(steps[-1][1]) if steps else None,
        "chosen": chosen.group(1).strip() if chosen else None,
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20, 2),
        "date": time.strftime("%Y-%m-%d"),
    }
    if done.returncode:
        line["output_tail"] = output[-2000:]
    print(json.dumps(line, ensure_ascii=False))


def longest_records(path: Path, count: int, model: str) -> tuple[list[dict[str, Any]], list[int]]:
    from cpu_lr import load_records
    from cpu_train import model_cache

    from worker.training import data, models

    tokenizer = models.load_tokenizer(models.resolve_model(model, model_cache()))
    rows = json.loads(path.read_text(encoding="utf-8"))
    records = load_records("alpaca-en", len(rows), path)
    prepared = data.prepare_samples(tokenizer, records, max_seq_length=100_000, system_prompt=None)
    lengths = [len(sample.input_ids) for sample in prepared.samples]
    order = sorted(range(len(records)), key=lambda i: -lengths[i])[:count]
    order.sort()  # the file's own order, not longest first
    return [records[i] for i in order], [lengths[i] for i in order]


if __name__ == "__main__":
    main()
