"""Training on a CPU: tunelab's engine against plain transformers Trainer + PEFT, same samples.

    python bench/cpu_train.py                      # SmolLM2-135M-Instruct and a Qwen2.5-0.5B shape
    python bench/cpu_train.py --shape smollm2-135m --steps 6

For each model, two runs, each in a process of its own (so each one's peak resident memory is
its own): the same weights (SmolLM2's real ones; the Qwen2.5-0.5B shape random-initialised,
since weights do not change speed), the same SAMSum dialogues (from the shared data folder,
rendered with the model's chat template, answer tokens labelled) in the same order, the same
LoRA (rank 16, alpha 32, dropout 0.05, every linear layer of the blocks), learning rate and
samples per optimiser step (8), through

(a) the plain recipe: ``transformers.Trainer`` on the CPU in float32, each batch padded to its
    longest sample (dynamic padding), the default AdamW;
(b) ``worker.training.trainer.train_model``: the engine's loop, with what it chooses on a CPU
    (``worker/training/cpu.py``): the weights loaded as the engine loads them.

One JSON line per model: seconds per optimiser step and real (non-pad) tokens per second over
the timed steps (all but the first), the ratio engine/plain, the peak resident memory of each
process (``ru_maxrss``, the model included), and each run's losses (they differ only by the
engine's bfloat16 compute, where the processor has it). Then a table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

DEFAULT_DATA = HERE.parents[1] / "shared" / "data" / "samsum-subset" / "samsum_train_first200.jsonl"
SYSTEM_PROMPT = "Summarize the dialogue in one short sentence."
MODELS = ("smollm2-135m", "qwen2.5-0.5b")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", action="append", choices=MODELS, help="default: both")
    parser.add_argument("--steps", type=int, default=6, help="optimiser steps per run")
    parser.add_argument("--batch-size", type=int, default=8, help="samples per optimiser step")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="SAMSum-style JSONL")
    parser.add_argument("--model-cache", type=Path, default=None)
    parser.add_argument(
        "--micro-batch-tokens", type=int, help="the engine's pass size (default: its own)"
    )
    parser.add_argument(
        "--plain-micro-batch",
        type=int,
        help="the plain run's batch per forward pass, the rest by gradient accumulation "
        "(default: the whole step for SmolLM2; 2 for the Qwen shape, whose float32 logits over "
        "a 152k vocabulary do not fit 24 GiB at 8)",
    )
    parser.add_argument("--child", choices=["plain", "engine"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help="also append the JSON lines to this file")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(args)), flush=True)
        return

    rows = []
    for shape in args.shape or list(MODELS):
        runs = {kind: spawn(kind, shape, args) for kind in ("plain", "engine")}
        plain, engine = runs["plain"], runs["engine"]
        line: dict[str, Any] = {"model": shape, "date": time.strftime("%Y-%m-%d")}
        if "error" in plain or "error" in engine:
            line.update(plain=plain, engine=engine)
        else:
            line.update(
                speedup=round(plain["seconds_per_step"] / engine["seconds_per_step"], 2),
                memory_ratio=round(engine["peak_rss_gib"] / plain["peak_rss_gib"], 2),
                plain=plain,
                engine=engine,
            )
        rows.append(line)
        text = json.dumps(line, separators=(",", ":"))
        print(text, flush=True)
        if args.out:
            with args.out.open("a", encoding="utf-8") as handle:
                handle.write(text + "\n")
    print_table(rows)


def spawn(kind: str, shape: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--shape",
        shape,
        "--steps",
        str(args.steps),
        "--batch-size",
        str(args.batch_size),
        "--max-length",
        str(args.max_length),
        "--data",
        str(args.data),
    ]
    if args.model_cache:
        command += ["--model-cache", str(args.model_cache)]
    if args.micro_batch_tokens:
        command += ["--micro-batch-tokens", str(args.micro_batch_tokens)]
    if args.plain_micro_batch:
        command += ["--plain-micro-batch", str(args.plain_micro_batch)]
    log(f"{shape}: {kind} …")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": (done.stderr or done.stdout).strip().splitlines()[-5:]}
    result: dict[str, Any] = json.loads(lines[-1])
    log(f"{shape}: {kind}: {result['seconds_per_step']:.2f} s/step, {result['peak_rss_gib']} GiB")
    return result


def print_table(rows: list[dict[str, Any]]) -> None:
    print()
    print("| model | plain s/step | engine s/step | speed-up | plain RSS | engine RSS |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        if "speedup" not in row:
            print(f"| {row['model']} | failed | | | | |")
            continue
        p, e = row["plain"], row["engine"]
        print(
            f"| {row['model']} | {p['seconds_per_step']:.2f} | {e['seconds_per_step']:.2f} | "
            f"{row['speedup']:.2f}x | {p['peak_rss_gib']:.2f} GiB | {e['peak_rss_gib']:.2f} GiB |"
        )


# --- one run, in its own process ----------------------------------------------------------


def run_child(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from worker.spec.config import TrainConfig
    from worker.training import cpu

    threads = cpu.configure_threads()
    shape = args.shape[0]
    config = TrainConfig(
        base_model="bench",
        method="lora",
        max_steps=args.steps,
        batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        learning_rate=2e-4,
        lora_r=16,
        lora_alpha=32,
        lora_dropout=0.05,
        target_modules="auto",
        max_seq_length=args.max_length,
        warmup_steps=0,
        seed=0,
        micro_batch_tokens=args.micro_batch_tokens,
    )
    tokenizer, weights_dir = tokenizer_and_weights(shape, args)
    samples = encode_samples(tokenizer, args.data, args.max_length)
    ordered = in_engine_order(samples, config)
    step_tokens = [
        sum(len(s.input_ids) for s in ordered[i : i + args.batch_size])
        for i in range(0, args.steps * args.batch_size, args.batch_size)
    ]
    if args.child == "engine":
        from worker.training import models

        dtype = models.training_dtype(config, torch.device("cpu"))
        model = load(shape, weights_dir, dtype)
        rss_loaded = rss_gib()
        marks, losses = run_engine(model, samples, config, tokenizer.pad_token_id or 0)
        notes: dict[str, Any] = {"weights": str(dtype).removeprefix("torch.")}
        # The engine's training FLOPs per second (as the estimate counts them) over the CPU
        # calibration's matrix rate: cpu_time.ENGINE_SHARE.
        calibration = cpu.calibrate()
        flops = 4 * sum(p.numel() for p in model.parameters())
        timed_tokens = sum(step_tokens[1 : len(marks)])
        rate = timed_tokens / (marks[-1] - marks[0]) * flops / 1e9
        notes.update(
            calibration_gflops=calibration["matmul_gflops"],
            training_gflops=round(rate, 1),
            engine_share=round(rate / float(calibration["matmul_gflops"]), 3),  # type: ignore[arg-type]
        )
    else:
        model = load(shape, weights_dir, torch.float32)
        rss_loaded = rss_gib()
        marks, losses = run_plain(model, ordered, config, args)
        notes = {"weights": "float32", "plain_micro_batch": args.plain_micro_batch}
    timed = [b - a for a, b in itertools.pairwise(marks)]
    seconds = sum(timed) / len(timed)
    return {
        "seconds_per_step": round(seconds, 3),
        "tokens_per_second": round(sum(step_tokens[1 : len(marks)]) / sum(timed), 1),
        "mean_tokens_per_sample": round(sum(step_tokens) / (len(step_tokens) * args.batch_size), 1),
        "peak_rss_gib": round(rss_gib(), 2),
        "rss_after_loading_gib": round(rss_loaded, 2),
        "losses": [round(x, 4) for x in losses],
        "threads": threads,
        "torch": torch.__version__,
        **notes,
    }


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def model_cache(given: Path | None = None) -> Path:
    """Where the benchmarks find converted models: ``given``, else ``TUNELAB_MODELS_DIR``, else
    the engine's default folder."""
    return given or Path(
        os.environ.get("TUNELAB_MODELS_DIR", Path.home() / ".cache" / "tunelab" / "models")
    )


def tokenizer_and_weights(shape: str, args: argparse.Namespace) -> tuple[Any, Path | None]:
    from worker.training import models

    cache = model_cache(args.model_cache)
    # SmolLM2's tokenizer serves both: the random Qwen shape's vocabulary is larger.
    resolved = models.resolve_model("smollm2-135m-instruct", cache)
    tokenizer = models.load_tokenizer(resolved)
    return tokenizer, resolved.path if shape == "smollm2-135m" else None


def load(shape: str, weights_dir: Path | None, dtype: Any) -> Any:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if weights_dir is not None:
        return AutoModelForCausalLM.from_pretrained(str(weights_dir), dtype=dtype)
    from train_throughput import SHAPES

    spec = dict(SHAPES["qwen2.5-0.5b"])
    config = AutoConfig.for_model(spec.pop("model_type"), **spec)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, dtype=dtype)


def encode_samples(tokenizer: Any, path: Path, max_length: int) -> list[Any]:
    from worker.training import data

    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        records.append(
            {
                "messages": [
                    {"role": "user", "content": row["dialogue"]},
                    {"role": "assistant", "content": row["summary"]},
                ]
            }
        )
    prepared = data.prepare_samples(
        tokenizer, records, max_seq_length=max_length, system_prompt=SYSTEM_PROMPT
    )
    return prepared.samples


def in_engine_order(samples: list[Any], config: Any) -> list[Any]:
    """The samples in the order the engine's first epoch takes them."""
    from worker.training import data

    batches = data.make_batches(samples, config.batch_size, seed=config.seed, epoch=0)
    return [sample for batch in batches for sample in batch]


class _Clock:
    def __init__(self) -> None:
        self.marks: list[float] = []
        self.losses: list[float] = []

    def on_event(self, level: str, message: str, data: dict[str, Any] | None = None) -> None:
        if message == "Training started":
            log(f"engine: {data}")

    def on_step(self, metrics: Any) -> None:
        self.marks.append(time.perf_counter())
        self.losses.append(metrics.loss)

    def should_stop(self) -> bool:
        return False


def run_engine(model: Any, samples: list[Any], config: Any, pad_id: int) -> tuple[list, list]:
    from worker.training.trainer import train_model

    clock = _Clock()
    train_model(model, samples, config, pad_id=pad_id, callbacks=clock)
    return clock.marks, clock.losses


def run_plain(model: Any, ordered: list[Any], config: Any, args: argparse.Namespace) -> tuple:
    import torch
    from peft import get_peft_model
    from torch.utils.data import SequentialSampler
    from train_throughput import pad_batch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from worker.training.adapters import build_peft_config

    torch.manual_seed(config.seed)
    model = get_peft_model(model, build_peft_config(config, model))
    dataset = [{"input_ids": s.input_ids, "labels": s.labels} for s in ordered]

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.marks: list[float] = []
            self.losses: list[float] = []

        def on_step_end(self, *_: Any, **__: Any) -> None:
            self.marks.append(time.perf_counter())

        def on_log(self, *_: Any, logs: dict[str, float] | None = None, **__: Any) -> None:
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))

    class InOrder(Trainer):
        def _get_train_sampler(self, *_: Any, **__: Any) -> SequentialSampler:
            return SequentialSampler(dataset)

    clock = Clock()
    micro = args.plain_micro_batch or (2 if args.shape[0] == "qwen2.5-0.5b" else args.batch_size)
    training_args = TrainingArguments(
        output_dir=str(Path(os.environ.get("TMPDIR", "/tmp")) / "bench-cpu-trainer"),
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=max(1, args.batch_size // micro),
        max_steps=args.steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=config.max_grad_norm,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        seed=config.seed,
        use_cpu=True,
    )
    trainer = InOrder(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=pad_batch,
        callbacks=[clock],
    )
    trainer.train()
    return clock.marks, clock.losses


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
