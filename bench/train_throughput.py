"""LoRA training throughput: plain transformers Trainer + PEFT against tunelab's engine.

    python bench/train_throughput.py --shape qwen2.5-0.5b --shape llama-3-8b
    python bench/train_throughput.py --shape llama-3-8b --method qlora --lengths chat-short

Without ``--lengths`` both data shapes run, one after the other, in the one command.

For each model shape: the same random-initialised bf16 model (weights do not change speed),
the same samples in the same order, the same LoRA (rank, alpha, dropout, target modules),
learning rate and schedule, and the same samples per optimiser step (8 per batch x 4
accumulation steps) go through

(a) the usual recipe at its best: ``transformers.Trainer`` with ``bf16=True``, SDPA attention,
    fused AdamW (``adamw_torch_fused``), each batch padded to its longest sample
    (DataCollatorForSeq2Seq style), gradient checkpointing only if the largest padded batch
    does not fit without it (probed first, reported); for QLoRA, PEFT's 4-bit LoRA layers on
    the same NF4 weights;
(b) ``worker.training.engine.train_model``: the loop ``train()`` runs after loading.

One JSON line per shape: real (non-pad) tokens per second of each over the timed steps (all
but the first), the ratio, peak allocated GPU memory of each, the final loss of each, and MFU
(4 x parameters FLOPs per real token against the GPU's dense bf16 peak).

Two data shapes (``--lengths``): ``lognormal``, this script's own, sample lengths log-normal
(median 320, sigma 0.9) between 50 and 2048 tokens, the first 20-80% of each sample prompt
(unlabelled); ``chat-short``, short chat turns, prompts log-normal around 60 tokens (sigma 0.8)
and answers around 110 (sigma 0.9). Tokens follow a Zipf law over 8,192 ids so the loss has
something to learn. ``--method qlora`` quantises the same random weights to NF4 for both
(``worker.training.fused_qlora.quantize_nf4``). Each line also gives the engine's own time and
memory estimate for the run (``worker.spec.estimate``), next to what was measured.

Compiled decoder layers (``worker.training.compiled``): ``--compile on --compile off`` times
the engine both ways in one command (``auto`` leaves this script's short runs eager: they are
too short to repay a compile). The
compile cache starts empty (a fresh folder, one per shape and data shape, under
``--compile-cache DIR`` when named), so the first run pays its full compile time. Besides the rate of the timed steps, each line gives the
rate over all steps from the call that starts training (``*_all_steps_tokens_per_s``:
setup and compile included) and the seconds to the end of the first step; running the same
command again with the same ``--compile-cache`` times a second run that loads the compiled
code instead.

CUDA graphs of whole passes (``worker.training.graphs``): ``--graphs off --graphs auto`` times
the engine both ways in one command. Each row shape's first pass runs as usual and is then
recorded, inside the timed steps: give ``--steps`` enough for shapes to come back (a real run
has thousands of steps) and read ``*_all_steps_tokens_per_s`` too.

Kernel sets on by default on a GPU (``worker.training.kernels.DROPOUT`` and ``LOSS``; the
sets ending in ``-mix`` draw the dropout kernels' bits by ``DROPOUT_BITS = "mix"``, the
default): ``--kernels all-mix --kernels neither`` times the engine with and without them in
one command. The first run with a kernel compiles it (Triton, about a second each), inside
the run: compare the later runs. ``--profile`` also sums the GPU's time by kind of kernel
(matrix products, attention, Triton, elementwise, ...).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import json
import math
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch._dynamo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worker.spec.config import TrainConfig
from worker.spec.formatting import IGNORE_INDEX, Sample
from worker.training import data, kernels
from worker.training.adapters import build_peft_config
from worker.training.engine import StepMetrics, train_model

# Public architecture hyper-parameters of each model; weights are random.
SHAPES: dict[str, dict[str, Any]] = {
    "qwen2.5-0.5b": {
        "model_type": "qwen2",
        "vocab_size": 151936,
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
    },
    "llama-3.2-1b": {
        "model_type": "llama",
        "vocab_size": 128256,
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": True,
    },
    # For a smoke run of this script on a CPU; not a real model.
    "tiny": {
        "model_type": "llama",
        "vocab_size": 8200,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": True,
    },
    "llama-3-8b": {
        "model_type": "llama",
        "vocab_size": 128256,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
    },
}

# Dense bf16 matrix peak by the datasheets (SXM parts), for MFU.
BF16_PEAK_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0}


@dataclass
class RunResult:
    tokens_per_second: float
    peak_memory_gib: float
    losses: list[float]
    seconds: float
    notes: dict[str, Any]
    # Every step's tokens over the whole run, from the call that starts training to the last
    # step's end: setup and compile time included.
    all_steps_tokens_per_second: float = 0.0
    first_step_seconds: float = 0.0  # from that call to the end of the first step
    # The second half of the steps: a graphed run's rate once most row shapes are recorded.
    late_tokens_per_second: float = 0.0
    step_ms: list[float] | None = None  # each step's wall time, the first from the start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", action="append", choices=sorted(SHAPES), required=True)
    parser.add_argument(
        "--lengths",
        action="append",
        choices=LENGTHS,
        help="data shape(s) to run (default: both, in this order)",
    )
    parser.add_argument("--method", choices=["lora", "qlora"], default="lora")
    parser.add_argument("--steps", type=int, default=6, help="optimiser steps per run")
    parser.add_argument(
        "--baseline-steps",
        type=int,
        help="stop the Trainer after this many of the steps (same schedule, same samples): "
        "its steady rate in less time, for long engine runs; losses are compared there",
    )
    parser.add_argument("--warmup-steps", type=int, default=1, help="untimed first steps")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--accumulation", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lora-alpha", type=int, default=32)
    parser.add_argument("--lora-dropout", type=float, default=0.05)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--median-length", type=int, default=320)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--baseline-checkpointing",
        choices=["auto", "on", "off"],
        default="auto",
        help="auto: on only if the largest padded batch does not fit without it",
    )
    parser.add_argument(
        "--micro-batch-tokens",
        type=int,
        action="append",
        help="engine token budget(s) to time (default: the engine's own choice)",
    )
    parser.add_argument(
        "--compile",
        choices=["auto", "on", "off"],
        action="append",
        help="engine runs with TUNELAB_COMPILE set so (default: as the environment says)",
    )
    parser.add_argument(
        "--graphs",
        choices=["auto", "on", "off"],
        action="append",
        help="engine runs with TUNELAB_CUDA_GRAPHS set so (default: as the environment says)",
    )
    parser.add_argument(
        "--kernels",
        choices=sorted(KERNEL_SETS),
        action="append",
        help="engine runs with these of the Triton kernel sets (worker.training.kernels): "
        "LoRA dropout drawn inside the products (else torch.native_dropout and a kept mask) "
        "and the loss head's cross-entropy (else the float32 chain); default: the engine's "
        "own (all-mix)",
    )
    parser.add_argument(
        "--compile-cache",
        type=Path,
        help="TORCHINDUCTOR_CACHE_DIR for the engine's compiled layers (default: a fresh "
        "empty folder, so the first run's compile time is measured in full; name a folder "
        "twice across commands to time a second run from the cache)",
    )
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile two of the engine's steps (--profile-from: the first of them, "
        "default the second step); print its busiest GPU kernels",
    )
    parser.add_argument(
        "--profile-from",
        type=int,
        default=2,
        help="with --profile: the first profiled step (a later one profiles a graphed run's "
        "replays rather than its recordings)",
    )
    parser.add_argument(
        "--trace",
        type=Path,
        help="with --profile: also write each engine run's Chrome trace (gzipped JSON) into "
        "this folder, for bench/trace_gaps.py",
    )
    parser.add_argument("--out", type=Path, help="also append the JSON lines to this file")
    args = parser.parse_args()
    if not torch.cuda.is_available() and set(args.shape) != {"tiny"}:
        sys.exit("This benchmark needs a CUDA GPU (only the 'tiny' smoke shape runs on a CPU).")
    if args.compile_cache is None:
        import tempfile

        args.compile_cache = Path(tempfile.mkdtemp(prefix="tunelab-bench-compile-"))

    for lengths in args.lengths or list(LENGTHS):
        for shape in args.shape:
            try:
                line = bench_shape(shape, lengths, args)
            except Exception as exc:  # one shape failing should not lose the others' numbers
                traceback.print_exc()
                line = {"shape": shape, "lengths": lengths, "error": f"{type(exc).__name__}: {exc}"}
            text = json.dumps(line, separators=(",", ":"))
            print(text, flush=True)
            if args.out:
                with args.out.open("a", encoding="utf-8") as handle:
                    handle.write(text + "\n")


def bench_shape(shape: str, lengths: str, args: argparse.Namespace) -> dict[str, Any]:
    samples_per_step = args.batch_size * args.accumulation
    count = args.steps * samples_per_step
    if lengths == "chat-short":
        samples = make_chat_samples(count, args.max_length, args.seed)
    else:
        samples = make_samples(count, args.median_length, args.max_length, args.seed)
    # The engine's own order (one epoch, shuffled by seed); the baseline reads it as is.
    ordered = [
        s for b in data.make_batches(samples, args.batch_size, seed=args.seed, epoch=0) for s in b
    ]
    step_tokens = [
        sum(len(s.input_ids) for s in ordered[i : i + samples_per_step])
        for i in range(0, len(ordered), samples_per_step)
    ]
    padded = [
        len(batch) * max(len(s.input_ids) for s in batch)
        for batch in (
            ordered[i : i + args.batch_size] for i in range(0, len(ordered), args.batch_size)
        )
    ]
    config = TrainConfig(
        base_model=f"random {shape}",
        method=args.method,
        max_steps=args.steps,
        batch_size=args.batch_size,
        gradient_accumulation_steps=args.accumulation,
        learning_rate=args.learning_rate,
        lora_r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        max_seq_length=args.max_length,
        seed=args.seed,
    )
    parameters = count_parameters(shape)
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    peak = next((v for k, v in BF16_PEAK_TFLOPS.items() if k in gpu), None)

    # A cache folder of this shape's own: the first engine run of each line compiles from cold.
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(args.compile_cache / f"{shape}-{lengths}")
    line: dict[str, Any] = {
        "shape": shape,
        "lengths": lengths,
        "method": args.method,
        "gpu": gpu,
        "parameters": parameters,
    }
    baseline = None
    if not args.skip_baseline:
        baseline = run_baseline(shape, ordered, config, args, step_tokens)
        log(f"{shape} baseline: {baseline}")
    engines = []
    defaults = kernels.DROPOUT, kernels.LOSS, kernels.DROPOUT_BITS
    settings = itertools.product(
        args.micro_batch_tokens or [None],
        args.compile or [None],
        args.graphs or [None],
        args.kernels or [None],
    )
    for budget, compile_setting, graphs_setting, kernel_set in settings:
        if compile_setting is not None:
            os.environ["TUNELAB_COMPILE"] = compile_setting
        if graphs_setting is not None:
            os.environ["TUNELAB_CUDA_GRAPHS"] = graphs_setting
        kernels.DROPOUT, kernels.LOSS, kernels.DROPOUT_BITS = (
            KERNEL_SETS[kernel_set] if kernel_set else defaults
        )
        engines.append(run_engine(shape, samples, config, budget or None, args, step_tokens))
        engines[-1].notes["compile_setting"] = compile_setting
        engines[-1].notes["graphs_setting"] = graphs_setting
        engines[-1].notes["kernels"] = kernel_set
        log(f"{shape} engine: {engines[-1]}")
    kernels.DROPOUT, kernels.LOSS, kernels.DROPOUT_BITS = defaults
    engine = engines[0]

    def mfu(result: RunResult) -> float | None:
        if peak is None:
            return None
        return round(4 * parameters * result.tokens_per_second / (peak * 1e12), 4)

    line.update(
        {
            "engine_tokens_per_s": round(engine.tokens_per_second, 1),
            "engine_peak_mem_gib": round(engine.peak_memory_gib, 2),
            "engine_final_loss": round(engine.losses[-1], 4),
            "engine_mfu": mfu(engine),
            "engine_all_steps_tokens_per_s": round(engine.all_steps_tokens_per_second, 1),
            "engine_first_step_s": round(engine.first_step_seconds, 2),
            "engine_late_tokens_per_s": round(engine.late_tokens_per_second, 1),
            "engine_step_ms": engine.step_ms,
        }
    )
    if baseline is not None:
        line.update(
            {
                "baseline_tokens_per_s": round(baseline.tokens_per_second, 1),
                "baseline_peak_mem_gib": round(baseline.peak_memory_gib, 2),
                "baseline_final_loss": round(baseline.losses[-1], 4),
                "baseline_mfu": mfu(baseline),
                "baseline_all_steps_tokens_per_s": round(baseline.all_steps_tokens_per_second, 1),
                "all_steps_speedup": round(
                    engine.all_steps_tokens_per_second / baseline.all_steps_tokens_per_second, 2
                ),
                "speedup": round(engine.tokens_per_second / baseline.tokens_per_second, 2),
                "memory_ratio": round(engine.peak_memory_gib / baseline.peak_memory_gib, 3)
                if baseline.peak_memory_gib
                else None,
                # At the baseline's last step (``--baseline-steps`` may stop it early).
                "loss_rel_diff": round(
                    abs(engine.losses[len(baseline.losses) - 1] - baseline.losses[-1])
                    / abs(baseline.losses[-1]),
                    5,
                ),
                "baseline_steps": len(baseline.losses),
            }
        )
    # At the first run's own budget where one was given, as the job form would show it.
    first_budget = (args.micro_batch_tokens or [None])[0] or None
    line.update(
        estimated(
            shape, samples, config.model_copy(update={"micro_batch_tokens": first_budget}), engine
        )
    )
    line.update(
        {
            "bf16_peak_tflops": peak,
            "steps": args.steps,
            "timed_steps": args.steps - args.warmup_steps,
            "samples_per_step": samples_per_step,
            "real_tokens": sum(step_tokens),
            "padding_overhead": round(sum(padded) / sum(step_tokens), 3),
            "lora": {"r": args.lora_r, "alpha": args.lora_alpha, "dropout": args.lora_dropout},
            "learning_rate": args.learning_rate,
            "engine_notes": engine.notes,
            "engine_losses": [round(x, 4) for x in engine.losses],
            "versions": versions(),
        }
    )
    if baseline is not None:
        line["baseline_notes"] = baseline.notes
        line["baseline_losses"] = [round(x, 4) for x in baseline.losses]
    for extra in engines[1:]:
        line.setdefault("engine_other_runs", []).append(
            {
                "micro_batch_tokens": extra.notes.get("micro_batch_tokens"),
                "compile_setting": extra.notes.get("compile_setting"),
                "compiled_layers": extra.notes.get("compiled_layers"),
                "graphs_setting": extra.notes.get("graphs_setting"),
                "kernels": extra.notes.get("kernels"),
                "cuda_graphs": extra.notes.get("cuda_graphs"),
                "tokens_per_s": round(extra.tokens_per_second, 1),
                "speedup": round(extra.tokens_per_second / baseline.tokens_per_second, 2)
                if baseline is not None
                else None,
                "all_steps_tokens_per_s": round(extra.all_steps_tokens_per_second, 1),
                "first_step_s": round(extra.first_step_seconds, 2),
                "late_tokens_per_s": round(extra.late_tokens_per_second, 1),
                "step_ms": extra.step_ms,
                "peak_mem_gib": round(extra.peak_memory_gib, 2),
                "final_loss": round(extra.losses[-1], 4),
            }
        )
    return line


def versions() -> dict[str, str]:
    import importlib.metadata as metadata

    found = {"torch": torch.__version__}
    for name in ("transformers", "peft", "bitsandbytes"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


# The catalog's model of each shape, for the estimate (same architecture numbers).
CATALOG_NAMES = {
    "qwen2.5-0.5b": "qwen2.5-0.5b-instruct",
    "llama-3.2-1b": "llama-3.2-1b-instruct",
    "llama-3-8b": "llama-3.1-8b-instruct",
}


def estimated(
    shape: str, samples: list[Sample], config: TrainConfig, engine: RunResult
) -> dict[str, Any]:
    """The estimate the job form would show for this run, and its ratio to the measurement
    (tokens per second of the timed steps; the peak allocated memory)."""
    from worker.spec.catalog import CATALOG
    from worker.spec.estimate import estimate, gpu_spec

    if shape not in CATALOG_NAMES:
        return {}
    lengths = sorted(len(s.input_ids) for s in samples)
    answers = sum(sum(1 for t in s.labels if t != IGNORE_INDEX) for s in samples)
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    result = estimate(
        config,
        CATALOG[CATALOG_NAMES[shape]].arch,
        gpu=gpu_spec(gpu),
        dataset_records=len(samples),
        mean_tokens=sum(lengths) / len(lengths),
        p95_tokens=lengths[int(0.95 * (len(lengths) - 1))],
        answer_share=answers / sum(lengths),
    )
    rate = float(result.breakdown["tokens_per_second"])
    peak_gib = result.peak_memory_bytes / 2**30
    return {
        "estimate_tokens_per_s": round(rate, 1),
        "estimate_over_measured_rate": round(rate / engine.tokens_per_second, 3),
        "estimate_peak_mem_gib": round(peak_gib, 2),
        "estimate_over_measured_mem": round(peak_gib / engine.peak_memory_gib, 3)
        if engine.peak_memory_gib
        else None,
        "estimate_row_tokens": result.breakdown["row_tokens"],
    }


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --- Data ----------------------------------------------------------------------------------


def make_samples(count: int, median: int, longest: int, seed: int) -> list[Sample]:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.exp(math.log(median) + 0.9 * torch.randn(count, generator=generator)).clamp(
        50, longest
    )
    prompt_share = 0.2 + 0.6 * torch.rand(count, generator=generator)
    vocabulary = 8192
    zipf = 1.0 / torch.arange(1, vocabulary + 1, dtype=torch.float64)
    samples = []
    for length, share in zip(lengths.tolist(), prompt_share.tolist(), strict=True):
        n = int(length)
        ids = (torch.multinomial(zipf, n, replacement=True, generator=generator) + 1).tolist()
        prompt = max(1, min(n - 2, int(n * share)))
        labels = [IGNORE_INDEX] * prompt + ids[prompt:]
        samples.append(Sample(input_ids=ids, labels=labels))
    return samples


LENGTHS = ("lognormal", "chat-short")


def make_chat_samples(count: int, longest: int, seed: int) -> list[Sample]:
    """Short chat turns: prompt lengths log-normal around 60 tokens (sigma 0.8), answers
    log-normal around 110 (sigma 0.9); every answer token labelled."""
    generator = torch.Generator().manual_seed(seed)
    prompts = torch.exp(math.log(60) + 0.8 * torch.randn(count, generator=generator))
    answers = torch.exp(math.log(110) + 0.9 * torch.randn(count, generator=generator))
    zipf = 1.0 / torch.arange(1, 8192 + 1, dtype=torch.float64)
    samples = []
    for p, a in zip(prompts.tolist(), answers.tolist(), strict=True):
        prompt = max(1, min(longest - 2, int(p)))
        n = min(longest, prompt + max(2, int(a)))
        ids = (torch.multinomial(zipf, n, replacement=True, generator=generator) + 1).tolist()
        samples.append(Sample(input_ids=ids, labels=[IGNORE_INDEX] * prompt + ids[prompt:]))
    return samples


# --- Models --------------------------------------------------------------------------------


def build_model(shape: str, seed: int, method: str = "lora") -> Any:
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = dict(SHAPES[shape])
    config = AutoConfig.for_model(spec.pop("model_type"), **spec)
    torch.manual_seed(seed)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(
            config, dtype=torch.bfloat16, attn_implementation="sdpa"
        )
    if method == "qlora":
        from worker.training.fused_qlora import quantize_nf4

        quantize_nf4(model)
    return model


def count_parameters(shape: str) -> int:
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = dict(SHAPES[shape])
    config = AutoConfig.for_model(spec.pop("model_type"), **spec)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def release() -> None:
    """Free what the previous run left (callers drop their references first)."""
    gc.collect()
    torch._dynamo.reset()  # each engine run compiles afresh (from the disk cache, if any)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_memory_gib() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0


# --- (b) tunelab's engine ------------------------------------------------------------------


class StepClock:
    """Callbacks that time each optimiser step (the engine syncs on the loss every step)."""

    def __init__(self) -> None:
        self.marks: list[float] = []
        self.losses: list[float] = []
        self.events: list[tuple[str, dict[str, Any] | None]] = []

    def on_event(self, level: str, message: str, data: dict[str, Any] | None = None) -> None:
        self.events.append((message, data))

    def on_step(self, metrics: StepMetrics) -> None:
        synchronize()
        self.marks.append(time.perf_counter())
        self.losses.append(metrics.loss)

    def should_stop(self) -> bool:
        return False


def run_engine(
    shape: str,
    samples: list[Sample],
    config: TrainConfig,
    budget: int | None,
    args: argparse.Namespace,
    step_tokens: list[int],
) -> RunResult:
    model = build_model(shape, args.seed, args.method)
    release()
    clock = StepClock()
    config = config.model_copy(update={"micro_batch_tokens": budget})
    from torch._dynamo.utils import counters

    graphs_before = counters["stats"]["unique_graphs"]
    started = time.perf_counter()
    if args.profile:
        trace = None
        if args.trace is not None:
            args.trace.mkdir(parents=True, exist_ok=True)
            trace = args.trace / f"{shape}-{len(list(args.trace.iterdir()))}.json.gz"
        trained = profile_engine(model, samples, config, clock, trace, args.profile_from)
    else:
        trained = train_model(model, samples, config, pad_id=0, callbacks=clock)
    seconds = time.perf_counter() - started
    peak = peak_memory_gib()
    notes = next((d for m, d in clock.events if m == "Training started"), None) or {}
    compiling = next((d for m, d in clock.events if m.startswith("Compiling")), None) or {}
    del trained, model
    release()
    return RunResult(
        tokens_per_second=timed_rate(clock.marks, step_tokens, args.warmup_steps),
        peak_memory_gib=peak,
        losses=clock.losses,
        seconds=round(seconds, 1),
        notes={
            k: notes.get(k)
            for k in ("packing", "micro_batch_tokens", "gradient_checkpointing", "fused_layers")
        }
        | {
            "compiled_layers": compiling.get("compiled_layers", 0),
            "compiled_graphs": counters["stats"]["unique_graphs"] - graphs_before,
            "cuda_graphs": notes.get("cuda_graphs"),
            "cuda_graph_passes": next(
                (d for m, d in clock.events if m.startswith("CUDA graphs:")), None
            ),
            "cuda_graphs_off": next(
                (m for m, _ in clock.events if m.startswith("CUDA graphs are off")), None
            ),
        },
        all_steps_tokens_per_second=sum(step_tokens[: len(clock.marks)])
        / (clock.marks[-1] - started),
        first_step_seconds=clock.marks[0] - started,
        late_tokens_per_second=timed_rate(clock.marks, step_tokens, max(1, len(clock.marks) // 2)),
        step_ms=[
            round((b - a) * 1e3, 1)
            for a, b in zip([started, *clock.marks], clock.marks, strict=False)
        ],
    )


def profile_engine(
    model: Any,
    samples: list[Sample],
    config: TrainConfig,
    clock: StepClock,
    trace: Path | None = None,
    first: int = 2,
) -> Any:
    """Run the engine under torch.profiler, recording steps ``first`` and the next (from 2;
    the first step is the warm-up), and print where the
    GPU's time went and how much of the wall time it was busy; with ``trace``, also write
    the Chrome trace there (``bench/trace_gaps.py`` reads it)."""
    from torch.profiler import ProfilerActivity, profile, schedule

    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA]
    with profile(
        activities=activities,
        schedule=schedule(wait=max(0, first - 2), warmup=1, active=2, repeat=1),
    ) as prof:
        on_step = clock.on_step

        def stepping(metrics: StepMetrics) -> None:
            on_step(metrics)
            prof.step()

        clock.on_step = stepping  # type: ignore[method-assign]
        trained = train_model(model, samples, config, pad_id=0, callbacks=clock)
    if trace is not None:
        import gzip

        raw = trace.with_suffix("")  # the profiler writes plain JSON; kept gzipped
        prof.export_chrome_trace(str(raw))
        with raw.open("rb") as source, gzip.open(trace, "wb") as target:
            target.write(source.read())
        raw.unlink()
        log(f"profile: trace written to {trace}")
    events = prof.key_averages()
    # Kernels only: an operator's row repeats the time of the kernels it launched.
    # ProfilerStep* rows count as device rows too, with the whole step's span: left out.
    kernels = [
        e
        for e in events
        if e.device_type == torch.autograd.DeviceType.CUDA and not e.key.startswith("ProfilerStep")
    ]
    busy = sum(e.self_device_time_total for e in kernels) / 1e3
    start = max(0, first - 2)
    wall = (clock.marks[start + 2] - clock.marks[start]) * 1e3
    log(f"profile: GPU busy {busy:.0f} ms of {wall:.0f} ms wall over 2 steps")
    groups: dict[str, list[float]] = {}
    for e in kernels:
        entry = groups.setdefault(kernel_group(e.key), [0.0, 0.0])
        entry[0] += e.self_device_time_total / 1e3
        entry[1] += e.count
    for name, (ms, count) in sorted(groups.items(), key=lambda item: -item[1][0]):
        log(f"profile group {name}: {ms:.1f} ms, {count:.0f} kernels over 2 steps")
    log(events.table(sort_by="self_device_time_total", row_limit=25, max_name_column_width=60))
    log(events.table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=60))
    return trained


# --kernels: (kernels.DROPOUT, kernels.LOSS, kernels.DROPOUT_BITS); "-mix": the dropout
# kernels' keep bits from the integer finaliser instead of Philox
KERNEL_SETS = {
    "all": (True, True, "philox"),
    "all-mix": (True, True, "mix"),
    "no-dropout": (False, True, "philox"),
    "no-loss": (True, False, "philox"),
    "no-loss-mix": (True, False, "mix"),
    "neither": (False, False, "philox"),
}

_KERNEL_GROUPS = (
    ("matmul", ("gemm", "cutlass", "nvjet", "sm90_", "sm100_", "cublas", "splitk")),
    ("attention", ("flash", "fmha", "attention")),
    ("triton", ("triton", "_kernel")),
    ("reduction", ("reduce", "softmax", "logsumexp", "norm")),
    ("copy", ("copy", "cat", "index", "gather", "scatter", "fill")),
    ("elementwise", ("elementwise", "vectorized", "unrolled")),
)


def kernel_group(name: str) -> str:
    """A coarse kind for a kernel's name, to sum the profile by."""
    lowered = name.lower()
    for group, needles in _KERNEL_GROUPS:
        if any(needle in lowered for needle in needles):
            return group
    return "other"


def timed_rate(marks: list[float], step_tokens: list[int], warmup: int) -> float:
    """Real tokens per second over the steps after ``warmup``: from the end of the last
    warm-up step to the end of the run."""
    tokens = sum(step_tokens[warmup : len(marks)])
    return tokens / (marks[-1] - marks[warmup - 1])


# --- (a) Trainer + PEFT with dynamic padding -----------------------------------------------


def pad_batch(features: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
    """DataCollatorForSeq2Seq's behaviour without a tokenizer: pad right to the longest."""
    width = max(len(f["input_ids"]) for f in features)
    input_ids = torch.zeros((len(features), width), dtype=torch.long)
    labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(features), width), dtype=torch.long)
    for row, feature in enumerate(features):
        n = len(feature["input_ids"])
        input_ids[row, :n] = torch.tensor(feature["input_ids"])
        labels[row, :n] = torch.tensor(feature["labels"])
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def run_baseline(
    shape: str,
    ordered: list[Sample],
    config: TrainConfig,
    args: argparse.Namespace,
    step_tokens: list[int],
) -> RunResult:
    from peft import get_peft_model
    from torch.utils.data import SequentialSampler
    from transformers import Trainer, TrainerCallback, TrainingArguments

    model = build_model(shape, args.seed, args.method)
    torch.manual_seed(config.seed)
    model = get_peft_model(model, build_peft_config(config, model))
    dataset = [{"input_ids": s.input_ids, "labels": s.labels} for s in ordered]
    checkpointing = {"on": True, "off": False}.get(args.baseline_checkpointing)
    if checkpointing is None:
        checkpointing = not fits_without_checkpointing(model, dataset, args.batch_size)
    release()

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.marks: list[float] = []
            self.losses: list[float] = []

        def on_step_end(self, _args: Any, _state: Any, control: Any, **__: Any) -> None:
            synchronize()
            self.marks.append(time.perf_counter())
            if args.baseline_steps and len(self.marks) >= args.baseline_steps:
                control.should_training_stop = True  # the schedule stays that of --steps

        def on_log(self, *_: Any, logs: dict[str, float] | None = None, **__: Any) -> None:
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))

    class InOrder(Trainer):
        # The engine's shuffle is already applied; keep it so both see the same steps.
        def _get_train_sampler(self, *_: Any, **__: Any) -> SequentialSampler:
            return SequentialSampler(dataset)

    clock = Clock()
    training_args = TrainingArguments(
        output_dir=str(Path(os.environ.get("TMPDIR", "/tmp")) / "bench-trainer"),
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.accumulation,
        max_steps=args.steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=config.max_grad_norm,
        bf16=True,
        optim="adamw_torch_fused" if torch.cuda.is_available() else "adamw_torch",
        gradient_checkpointing=checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        seed=config.seed,
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = InOrder(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=pad_batch,
        callbacks=[clock],
    )
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    peak = peak_memory_gib()
    notes = {"gradient_checkpointing": checkpointing, "optim": str(training_args.optim)}
    del trainer, model
    release()
    return RunResult(
        tokens_per_second=timed_rate(clock.marks, step_tokens, args.warmup_steps),
        peak_memory_gib=peak,
        losses=clock.losses,
        seconds=round(seconds, 1),
        notes=notes,
        all_steps_tokens_per_second=sum(step_tokens[: len(clock.marks)])
        / (clock.marks[-1] - started),
        first_step_seconds=clock.marks[0] - started,
        late_tokens_per_second=timed_rate(clock.marks, step_tokens, max(1, len(clock.marks) // 2)),
    )


def fits_without_checkpointing(model: Any, dataset: list[dict[str, Any]], batch_size: int) -> bool:
    """Forward and backward of the largest padded batch, as the Trainer would run it."""
    batches = [dataset[i : i + batch_size] for i in range(0, len(dataset), batch_size)]
    largest = max(batches, key=lambda b: len(b) * max(len(f["input_ids"]) for f in b))
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in pad_batch(largest).items()}
    model.train()
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = model(**inputs)
        out.loss.backward()
        fits = True
    except torch.OutOfMemoryError:
        fits = False
    out = None
    model.zero_grad(set_to_none=True)
    return fits


if __name__ == "__main__":
    main()
