"""The CPU learning-rate and epoch rule, measured: validation loss per rate on public datasets.

    python bench/cpu_lr.py                                   # alpaca-en and BELLE, 3 rates
    python bench/cpu_lr.py --dataset alpaca-zh --rate 8e-4 --epochs 2
    python bench/cpu_lr.py --dataset samsum --records 200 --held-out 20

Each run trains SmolLM2-135M-Instruct through ``worker.training.engine.train`` (the path a
job takes, on this machine's CPU path) with every setting ``auto`` except the learning rate
and the number of passes, on the first ``--records`` records of a dataset in the shared data
folder (the last ``--held-out`` of them kept apart), and computes the held-out loss
``--evals`` times over the run. One JSON line per run: the validation losses by step, the
final one, the steps and the wall time; then a table per dataset, rates side by side, and the
step at which each rate first reached the final loss of the lowest rate (how much sooner the
higher rate gets there). Runs one after the other in this process; nothing is written
outside a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

SHARED = HERE.parents[1] / "shared" / "data"
DATASETS = {
    "alpaca-en": SHARED / "llamafactory-demo" / "alpaca_en_demo.json",
    "alpaca-zh": SHARED / "llamafactory-demo" / "alpaca_zh_demo.json",
    "belle": SHARED / "belle-eval-zh" / "eval_set.jsonl",
    "samsum": SHARED / "samsum-subset" / "samsum_train_first200.jsonl",
}
SAMSUM_PROMPT = "Summarize the dialogue in one short sentence."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dataset", action="append", choices=sorted(DATASETS), help="default: alpaca-en, belle"
    )
    parser.add_argument(
        "--rate", action="append", type=float, help="default: 2e-4 (the GPU rule), 8e-4, 2e-3"
    )
    parser.add_argument("--epochs", type=float, default=1.0, help="passes over the data")
    parser.add_argument("--records", type=int, default=200)
    parser.add_argument("--held-out", type=int, default=20)
    parser.add_argument("--evals", type=int, default=5, help="validation losses per run")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--model-cache", type=Path, default=None)
    parser.add_argument("--out", type=Path, help="also append the JSON lines to this file")
    args = parser.parse_args()

    results: list[dict[str, Any]] = []
    for name in args.dataset or ["alpaca-en", "belle"]:
        records = load_records(name, args.records)
        train, held_out = records[: -args.held_out], records[-args.held_out :]
        for rate in args.rate or [2e-4, 8e-4, 2e-3]:
            line = run(name, rate, train, held_out, args)
            results.append(line)
            print(json.dumps(line, ensure_ascii=False), flush=True)
            if args.out:
                with args.out.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(line, ensure_ascii=False) + "\n")
    print_table(results)


def load_records(name: str, count: int, path: Path | None = None) -> list[dict[str, Any]]:
    """The first ``count`` records of a dataset (``path``: another file of its format) as
    chat records; fewer than ``count`` in the file is an error."""
    path = path or DATASETS[name]
    if path.suffix == ".json":
        rows = json.loads(path.read_text(encoding="utf-8"))
    else:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    records = []
    for row in rows[:count]:
        if name == "belle":
            prompt, answer = row["question"], row["std_answer"]
        elif name == "samsum":
            prompt, answer = row["dialogue"], row["summary"]
        else:
            prompt = row["instruction"] + ("\n\n" + row["input"] if row.get("input") else "")
            answer = row["output"]
        messages = [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": answer},
        ]
        if name == "samsum":
            messages.insert(0, {"role": "system", "content": SAMSUM_PROMPT})
        records.append({"messages": messages})
    if len(records) < count:
        raise SystemExit(f"{name} has {len(records)} records, fewer than --records {count}")
    return records


class Recorder:
    def __init__(self) -> None:
        self.validation: list[tuple[int, float]] = []
        self.losses: list[float] = []
        self.total_steps = 0
        self.events: list[str] = []

    def on_event(self, level: str, message: str, data: dict[str, Any] | None = None) -> None:
        self.events.append(message)

    def on_step(self, metrics: Any) -> None:
        self.total_steps = metrics.total_steps
        self.losses.append(metrics.loss)
        if metrics.val_loss is not None:
            self.validation.append((metrics.step, round(metrics.val_loss, 4)))

    def should_stop(self) -> bool:
        return False


def run(
    name: str,
    rate: float,
    train: list[dict[str, Any]],
    held_out: list[dict[str, Any]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    from cpu_train import model_cache

    from worker.spec.config import TrainConfig
    from worker.training import engine

    cache = model_cache(args.model_cache)
    recorder = Recorder()
    probe = TrainConfig(base_model=args.model, method="lora", epochs=args.epochs)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cpu-lr-") as tmp:
        steps = steps_for(probe, train)
        config = TrainConfig(
            base_model=args.model,
            method="lora",
            epochs=args.epochs,
            learning_rate=rate,
            eval_every=max(1, steps // args.evals),
        )
        engine.train(
            config,
            records=train,
            validation_records=held_out,
            output_dir=Path(tmp) / "adapter",
            model_cache_dir=cache,
            callbacks=recorder,
        )
    return {
        "dataset": name,
        "learning_rate": rate,
        "epochs": args.epochs,
        "train_records": len(train),
        "held_out": len(held_out),
        "steps": recorder.total_steps,
        "validation": recorder.validation,
        "final_val_loss": recorder.validation[-1][1] if recorder.validation else None,
        "first_train_loss": round(recorder.losses[0], 4) if recorder.losses else None,
        "minutes": round((time.perf_counter() - started) / 60, 2),
        "date": time.strftime("%Y-%m-%d"),
    }


def steps_for(config: Any, train: list[dict[str, Any]]) -> int:
    """The optimiser steps ``auto`` plans for these records on a CPU worker."""
    from worker.spec import autoconfig

    auto = autoconfig.resolve_auto(config, model_params=None, dataset_records=len(train), cpu=True)
    return autoconfig.total_steps(
        len(train), int(auto.batch_size), int(auto.gradient_accumulation_steps), auto.epochs
    )


def print_table(results: list[dict[str, Any]]) -> None:
    for name in dict.fromkeys(r["dataset"] for r in results):
        rows = [r for r in results if r["dataset"] == name]
        print(f"\n{name}: validation loss on {rows[0]['held_out']} held-out records")
        print(
            "| rate | steps | "
            + " | ".join(f"step {s}" for s, _ in rows[0]["validation"])
            + " | time |"
        )
        for r in rows:
            losses = " | ".join(f"{loss:.3f}" for _, loss in r["validation"])
            print(f"| {r['learning_rate']:g} | {r['steps']} | {losses} | {r['minutes']} min |")
        lowest = min(rows, key=lambda r: r["learning_rate"])
        target = lowest["final_val_loss"]
        for r in rows:
            if r is lowest or target is None:
                continue
            reached = next((s for s, loss in r["validation"] if loss <= target), None)
            print(
                f"{r['learning_rate']:g} reaches {lowest['learning_rate']:g}'s final "
                f"{target:.3f} at step {reached if reached is not None else '(never)'} "
                f"of {r['steps']}"
            )


if __name__ == "__main__":
    main()
