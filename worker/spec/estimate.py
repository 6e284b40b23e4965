"""Peak GPU memory and wall time of a run, before it is queued.

A model of the engine as it is: the step's samples packed into rows of at most a token budget
(or padded batches for prompt learning and models that cannot be packed), the loss taken on
labelled positions only without full-vocabulary logits (for plain-head models), LoRA through
the fused linear (float32 master weights, bf16 compute, a shared saved input), fused RMSNorm
and SwiGLU, fused AdamW, and gradient checkpointing only when a row would not fit otherwise.

Memory is counted in bytes, term by term (see ``Estimate.breakdown``): frozen weights, the
trained parameters with their gradients and AdamW moments, the activations one forward pass
keeps for backward (per token and layer, from the tensors each fused function saves), the
loss head's chunk of float32 logits and the backward pass's working set. The peak is what
``torch.cuda.max_memory_allocated`` reports; the CUDA context and the caching allocator's
slack come on top (``reserved_bytes``). Checked on an H200 against measured peaks
(tests/worker/test_gpu.py, pinned in tests/worker/test_estimate.py): LoRA on Qwen2.5-0.5B,
Qwen3-0.6B, Llama-3.2-1B and Llama-3.1-8B shapes from 2k- to 30k-token passes within 5%;
DoRA, IA3, P-tuning and full fine-tuning within 2% and prefix-tuning 14% over, on a 0.5B
shape. QLoRA (the fused 4-bit linear) within 11% at 0.5B, 1B and 8B (bench/train_throughput.py,
2026-12-05).

Wall time is approximate: training tokens over a throughput from model FLOPs utilisation
fitted to this engine on an H200 (fused LoRA reaches ~15% at 0.5B, ~26% at 1B, ~29% at 8B
parameters with its default pass sizes; the measured runs fall within 0.9-1.4x of the
estimate), scaled by the GPU's bf16 peak, plus loading time.

Torch-free: the web process calls it.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from worker.spec import budget as budget_rule
from worker.spec.autoconfig import resolve_auto, total_steps
from worker.spec.catalog import Architecture
from worker.spec.config import LORA_METHODS, TrainConfig
from worker.spec.cpu_time import CpuCalibration, as_dict

GIB = 2**30


@dataclass(frozen=True)
class GpuSpec:
    """A GPU as the estimate sees it: memory and dense bf16 matrix throughput."""

    name: str
    memory_bytes: int
    bf16_tflops: float


# Dense (not sparse) bf16 tensor-core peaks from the vendors' datasheets.
GPUS: dict[str, GpuSpec] = {
    "H200": GpuSpec("NVIDIA H200", 143_771 * 2**20, 989.4),
    "H100": GpuSpec("NVIDIA H100 80GB", 80 * GIB, 989.4),
    "A100-80GB": GpuSpec("NVIDIA A100 80GB", 80 * GIB, 312.0),
    "A100": GpuSpec("NVIDIA A100 40GB", 40 * GIB, 312.0),
    "L40S": GpuSpec("NVIDIA L40S", 48 * GIB, 362.0),
    "A6000": GpuSpec("NVIDIA RTX A6000", 48 * GIB, 154.8),
    "RTX 4090": GpuSpec("NVIDIA GeForce RTX 4090", 24 * GIB, 165.2),
    "RTX 3090": GpuSpec("NVIDIA GeForce RTX 3090", 24 * GIB, 71.0),
    "L4": GpuSpec("NVIDIA L4", 24 * GIB, 121.0),
    "A10": GpuSpec("NVIDIA A10", 24 * GIB, 125.0),
    "T4": GpuSpec("NVIDIA T4", 16 * GIB, 65.0),
}
DEFAULT_GPU = "H200"


def gpu_spec(name: str | None) -> GpuSpec:
    """The spec named by ``name`` (e.g. torch's "NVIDIA H200"); the H200's when unknown."""
    return known_gpu(name) or GPUS[DEFAULT_GPU]


def known_gpu(name: str | None) -> GpuSpec | None:
    """The spec whose key appears in ``name``, or None."""
    if not name:
        return None
    wanted = name.upper().replace("-", " ")
    if "A100" in wanted and "80" in wanted:
        return GPUS["A100-80GB"]
    # Longest keys first, so that "RTX 4090" is not taken for something shorter.
    for key in sorted(GPUS, key=len, reverse=True):
        if key.upper().replace("-", " ") in wanted:
            return GPUS[key]
    return None


@dataclass(frozen=True)
class Estimate:
    peak_memory_bytes: int  # torch.cuda.max_memory_allocated over the run
    seconds: float  # wall time, loading included; approximate
    breakdown: dict[str, Any] = field(default_factory=dict)


# The engine's choices this model mirrors (worker.training.packing / steps / loss / fused).
_ROW_WORK = 2048 * 218_103_808
_MIN_BUDGET, _MAX_BUDGET = 512, 32768
_CHUNK_ELEMENTS = 2**27
_PLAIN_HEAD_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "olmo", "olmo2"})
_FUSED_NORM_TYPES = frozenset(
    {"llama", "mistral", "qwen2", "qwen3", "qwen3_moe", "olmo", "olmo2", "granite"}
)
_FUSED_MLP_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "olmo", "olmo2", "granite"})
_FUSED_PROJECTION_TYPES = frozenset({"phi3"})  # qkv_proj and gate_up_proj are single linears
_PROMPT_METHODS = ("prefix_tuning", "p_tuning")

# Throughput of fused LoRA on a GPU: model FLOPs utilisation, counting 4 x parameters FLOPs per
# token plus attention, that a forward pass of many tokens reaches, by model size. Interpolated
# in log(parameters). A pass of T tokens runs at T / (T + T0) of it, T0 being
# _ROW_OVERHEAD_WORK / (weights of one layer): each pass pays a host-side cost per layer
# (Python, kernel launches) that a small layer cannot hide (~15k tokens at 0.5B, ~1k at 8B).
# Fitted on 2026-12-04..06 to bench/train_throughput.py, first on an H200, then refitted on
# 2026-12-06 on an H100 after the Triton kernels (worker.training.kernels): twelve runs (LoRA
# and QLoRA at Qwen2.5-0.5B, Llama-3.2-1B and Llama-3-8B, both data shapes) all within
# 0.89-1.17 of the measured rate. The host's speed matters at 0.5B and 1B, where a step is
# bound by Python and launches: the same 0.5B runs on another H100 host went up to 28% faster.
# Refitted on 2026-12-07 (one H100, bench/train_throughput.py, LoRA and 8B QLoRA) once the
# dropout and loss kernels came on by default (1.11x at 8B, 1.13-1.27x at 0.5B and 1B): the
# seven runs there within 0.81-1.01 of the measured rate (0.5B lowest: that host was fast);
# the runs of 2026-12-06 on another H100 host, with the kernels' gain applied, 0.96-1.21.
_MFU_POINTS = ((494_032_768, 0.310), (1_235_814_400, 0.398), (8_030_261_248, 0.482))
_ROW_OVERHEAD_WORK = 2.24e11
# Passes replayed as CUDA graphs (worker.training.graphs, whose automatic rule this mirrors):
# packed LoRA on one GPU with a plain head, layers of at most _GRAPH_LAYER_WEIGHTS weights,
# passes of at most _GRAPH_PASS_WORK (tokens x one layer's weights), runs of at least
# _GRAPH_MIN_PASSES passes. At Qwen2.5-0.5B chat-short (8.4k-token passes) on an H100,
# 2026-12-06, a 96-step run saved about 17 ms of ~140 ms on each of its 75 replayed passes
# (1.14x) and spent it again recording its 21 shapes; the second half of that run ran 1.27x.
# On 2026-12-07 (new shapes recorded first, one attention bound a run) a 100-step run ran
# 1.09x overall and 1.18x in its second half. A long run has recorded its shapes early: 1.15x.
# The pass bound rose to 6e11 on 2026-12-07 evening: 0.5B lognormal (2.2e11) then ran 1.23-1.42x
# replayed and 1B chat-short (4.7e11) 1.11-1.17x over 100-step runs; 1.15x still stands.
_GRAPH_LAYER_WEIGHTS = 80_000_000
_GRAPH_PASS_WORK = 6e11
_GRAPH_MIN_PASSES = 100
_GRAPH_SPEEDUP = 1.15
# Time per token relative to fused LoRA at the same pass size, measured once each on a
# Qwen2.5-0.5B shape on an H200. Plain QLoRA uses _QLORA_TIME_POINTS below (measured by
# size); the flat "qlora" factor here is what DoRA on a 4-bit model still multiplies by.
_METHOD_TIME = {
    "dora": 2.7,
    "qlora": 1.5,
    "ia3": 0.55,
    # Re-measured on the integrated engine (22k tokens/s; 3-5k before prompt-learning
    # methods got their own padded path): about P-tuning's cost.
    "prefix_tuning": 1.15,
    "p_tuning": 1.05,
    "full": 0.6,
}
# On a GPU, fused LoRA (and QLoRA) run the dropout and loss kernels since 2026-12-07, which
# _MFU_POINTS now include; these methods do not run the fused functions and gained nothing,
# so their time relative to fused LoRA grew by what tests/worker/test_gpu.py measured on one
# H100 that day. A CPU has no such kernels: there the factors above hold as they are.
_GPU_UNFUSED_TIME = {"dora": 1.22, "prefix_tuning": 1.22, "p_tuning": 1.14, "full": 1.17}
# Fused QLoRA's time per token relative to fused LoRA at the same pass size (bench/
# train_throughput.py, both data shapes, torch 2.11, bitsandbytes 0.50.2): on an H200 on
# 2026-12-05 1.53 at Qwen2.5-0.5B, 1.22 at Llama-3.2-1B, 1.04 at Llama-3-8B; on an H100 on
# 2026-12-06, with the Triton kernels, 1.52-1.54, 1.13-1.16 and 1.08. The dequantisation costs
# each pass a fixed time per weight, which small layers cannot hide. Interpolated in
# log(parameters).
_QLORA_TIME_POINTS = ((494_032_768, 1.5), (1_235_814_400, 1.15), (8_030_261_248, 1.08))


def _qlora_time(params: int) -> float:
    points = _QLORA_TIME_POINTS
    if params <= points[0][0]:
        return points[0][1]
    for (p0, f0), (p1, f1) in itertools.pairwise(points):
        if params <= p1:
            return f0 + math.log(params / p0) / math.log(p1 / p0) * (f1 - f0)
    return points[-1][1]


# Loading: reading the weights (~1.5 GB/s from a local disk or cache) plus a fixed start.
_LOAD_BYTES_PER_S = 1.5e9
_START_SECONDS = 15.0
# The caching allocator keeps freed blocks for reuse, so a card needs more than the peak
# allocation. On an H200, where nothing pressed it, reserved memory ran 1.06-1.6x the
# allocated peak (packed rows of varying sizes fragment it); under pressure the allocator
# returns cached blocks and retries, so a fuller card gets by with less.
_RESERVED_FACTOR = 1.15
_CUDA_CONTEXT_BYTES = 600 * 2**20
# Multi-GPU steps (not measured here yet): the all-reduce's bus bandwidth, taken as a PCIe
# card's (NVLink is several times faster), and a fixed cost per step for the collectives.
_ALL_REDUCE_BYTES_PER_S = 20e9
_SYNC_LATENCY_SECONDS = 0.005
# What a run needs of a card beyond its peak: the CUDA context (placement adds it).
CUDA_CONTEXT_BYTES = _CUDA_CONTEXT_BYTES


def estimate(
    config: TrainConfig,
    arch: Architecture,
    *,
    gpu: GpuSpec,
    dataset_records: int,
    mean_tokens: float,
    p95_tokens: float | None = None,
    answer_share: float = 0.5,
    cpu: CpuCalibration | None = None,
    gpus: int = 1,
) -> Estimate:
    """Peak GPU memory and wall time of training ``config`` on a model of ``arch``.

    With ``gpus`` above one (a GPU worker; one process per GPU under DDP, see
    ``worker.training.distributed``), memory is per GPU and the time is that of the step's
    samples shared across the GPUs plus each step's all-reduce; ``speed_up`` in the breakdown
    compares it with one GPU. A model, not a measurement (see ``_Run.seconds``).

    With ``cpu`` (a worker without CUDA), "auto" takes the CPU rules and the wall time comes
    from that CPU's measured rate instead of the GPU's (memory stays the GPU model's).

    ``mean_tokens`` and ``p95_tokens`` are sample lengths in the model's tokens (chat
    template included), ``answer_share`` the share of tokens that carry the loss. Fields
    left at "auto" are resolved first, exactly as the engine will.
    """
    config = resolve_auto(
        config,
        model_params=arch.params(),
        dataset_records=dataset_records,
        dataset_p95_tokens=p95_tokens,
        cpu=cpu is not None,
    )
    shape = (config, arch, gpu, dataset_records, mean_tokens, p95_tokens, answer_share)
    ranks = 1 if cpu is not None else max(1, gpus)
    run = _Run(*shape, ranks=ranks)
    run.cpu = cpu
    memory = run.memory()
    seconds = run.seconds()
    speed_up = 1.0
    if ranks > 1:
        speed_up = _Run(*shape).training_seconds() / run.training_seconds()
    peak = max(sum(memory.values()), run.loading_bytes())
    reserved = int(peak * _RESERVED_FACTOR) + _CUDA_CONTEXT_BYTES
    return Estimate(
        peak_memory_bytes=int(peak),
        seconds=seconds["total"],
        breakdown={
            "memory_bytes": {k: int(v) for k, v in memory.items()},
            "reserved_bytes": reserved,
            # The engine plans its passes to fill ~90% of the free memory: the run fits when
            # the peak does; the allocator's slack makes a close fit "tight".
            "fits": peak + _CUDA_CONTEXT_BYTES <= gpu.memory_bytes,
            "tight": reserved > gpu.memory_bytes,
            "gpu": gpu.name,
            "cpu": as_dict(cpu) if cpu is not None else None,
            "seconds": seconds,
            "steps": run.steps,
            "tokens": int(run.train_tokens),
            "tokens_per_second": round(run.train_tokens / run.training_seconds(), 1),
            "gpus": ranks,
            "memory_per_gpu": True,
            "speed_up": round(speed_up, 2),
            "packed": run.packed,
            "row_tokens": run.row_tokens,
            "peak_row_tokens": run.peak_row_tokens,  # the memory's pass (see _largest_step)
            "micro_batches_per_step": run.micro_batches,
            "gradient_checkpointing": run.checkpointing,
            "trainable_parameters": run.trainable,
            "parameters": arch.params(),
            "config": config.model_dump(mode="json", include=_SHOWN_FIELDS),
            "approximate": True,
            "calibrated": run.calibrated,
        },
    )


_SHOWN_FIELDS = {
    "method",
    "epochs",
    "max_steps",
    "learning_rate",
    "batch_size",
    "gradient_accumulation_steps",
    "max_seq_length",
    "warmup_steps",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "micro_batch_tokens",
}


def default_token_budget(arch: Architecture) -> int:
    """The engine's tokens per packed row when ``micro_batch_tokens`` is unset."""
    return max(_MIN_BUDGET, min(_MAX_BUDGET, _ROW_WORK // max(1, arch.layer_weights())))


class _Run:
    """One run's shape: what each forward pass holds and how many there are."""

    def __init__(
        self,
        config: TrainConfig,
        arch: Architecture,
        gpu: GpuSpec,
        records: int,
        mean_tokens: float,
        p95_tokens: float | None,
        answer_share: float,
        *,
        ranks: int = 1,
    ) -> None:
        self.config, self.arch, self.gpu = config, arch, gpu
        self.ranks = ranks  # processes (GPUs) sharing each step
        self.cpu: CpuCalibration | None = None  # a CPU worker's measured rate, if it runs there
        assert isinstance(config.max_seq_length, int)
        assert isinstance(config.batch_size, int)
        assert isinstance(config.gradient_accumulation_steps, int)
        self.max_seq = config.max_seq_length
        self.method = config.method
        self.dora = bool(getattr(config, "use_dora", False)) and self.method in LORA_METHODS
        self.prompt = self.method in _PROMPT_METHODS
        self.virtual = int(getattr(config, "num_virtual_tokens", 0)) if self.prompt else 0
        self.full = self.method == "full"
        self.sharded = self.full and ranks > 1  # FSDP (worker.training.ranks.Sharded)
        self.mean = max(1.0, min(float(mean_tokens), self.max_seq))
        self.longest = min(self.max_seq, max(self.mean, p95_tokens or 2.5 * self.mean))
        self.answer_share = min(1.0, max(0.05, answer_share))
        self.records = max(1, records)
        self.per_step = config.batch_size * config.gradient_accumulation_steps
        self.batch_size = config.batch_size
        self.steps = config.max_steps or total_steps(
            self.records, config.batch_size, config.gradient_accumulation_steps, config.epochs
        )
        self.train_tokens = self.steps * min(self.per_step, self.records) * self.mean
        self.packed = config.packing and arch.packable and not self.prompt
        self.plain_head = arch.model_type in _PLAIN_HEAD_TYPES and not self.prompt
        # QLoRA's 4-bit linears run the fused function too (dequantised in forward and backward).
        self.fused_lora = self.method in ("lora", "qlora") and not self.dora
        # Methods and model types whose memory was measured against this model.
        self.calibrated = self.method in (
            "lora",
            "qlora",  # measured 2026-12-05 (fused QLoRA), 0.89-0.91x of the peak
            "ia3",
            "p_tuning",
            "prefix_tuning",
            "full",
        ) and (arch.model_type in _PLAIN_HEAD_TYPES)
        self.trainable = self._trainable()
        # Each process trains its share of the step's samples (see worker.training.ranks).
        rank_samples = math.ceil(min(self.per_step, self.records) / ranks)
        step_tokens = rank_samples * self.mean
        # Each padded batch runs to its longest sample.
        self.padded_width = 0 if self.packed else int(self.longest + self.virtual)
        budget, self.checkpointing = self._plan()
        if self.packed:
            # Packing fills rows up to the budget; the last row of a step holds the rest.
            self.row_tokens = int(min(budget, step_tokens))
            self.micro_batches = max(1, math.ceil(step_tokens / budget))
            # The peak comes with the run's largest pass, not its mean one: where a step is one
            # pass (small models), the step of the most tokens (see _largest_step).
            self.peak_row_tokens = int(min(budget, self._largest_step(rank_samples)))
        else:
            self.row_tokens = min(self.batch_size, self.records, rank_samples) * self.padded_width
            self.peak_row_tokens = self.row_tokens  # each batch runs to its longest sample
            self.micro_batches = (
                config.gradient_accumulation_steps
                if ranks == 1
                else math.ceil(rank_samples / self.batch_size)
            )

    def _largest_step(self, samples: int) -> float:
        """About the most tokens one of the run's steps holds: the steps draw their samples
        at random (``worker.training.data.make_batches``), so a step's tokens vary around
        ``samples x mean`` by the samples' spread times sqrt(samples), and the largest of the
        run's steps lies about sqrt(2 ln steps) of that above the mean. The spread is read
        from the 95th percentile, (p95 - mean) / 2, which fits long-tailed lengths. Checked
        against bench/train_throughput.py's data on 2026-12-07 (100 steps of 32 samples):
        23.2k tokens for a largest step of 21.5k (log-normal), 10.8k for 11.8k (chat-short);
        the mean steps hold 14.7k and 7.8k. Never more than every sample at the longest."""
        spread = max(0.0, self.longest - self.mean) / 2
        above = math.sqrt(2 * math.log(max(2, self.steps))) * spread * math.sqrt(samples)
        return min(samples * self.mean + above, samples * max(self.longest, self.mean))

    # --- Parameters -------------------------------------------------------------------

    def _projections(self) -> list[tuple[int, int]]:
        """(in, out) of each linear in one transformer block that LoRA adapts."""
        return list(self._adapted().values())

    def _adapted(self) -> dict[str, tuple[int, int]]:
        """The linears of one transformer block that LoRA adapts, by name: (in, out)."""
        a = self.arch
        h, q, kv, inter = a.hidden_size, a.q_dim, a.kv_dim, a.intermediate_size
        targets = self.config.target_modules
        if a.model_type in _FUSED_PROJECTION_TYPES:
            named = {
                "qkv_proj": (h, q + 2 * kv),
                "o_proj": (q, h),
                "gate_up_proj": (h, 2 * inter),
                "down_proj": (inter, h),
            }
        else:
            named = {
                "q_proj": (h, q),
                "k_proj": (h, kv),
                "v_proj": (h, kv),
                "o_proj": (q, h),
                "gate_proj": (h, inter),
                "up_proj": (h, inter),
                "down_proj": (inter, h),
            }
        if targets == "auto":
            return named
        chosen = {name: shape for name, shape in named.items() if name in targets}
        return chosen or named

    def _trainable(self) -> int:
        a, c = self.arch, self.config
        if self.full:
            return a.params()
        if self.method in LORA_METHODS:
            assert isinstance(c.lora_r, int)
            per_layer = sum(c.lora_r * (i + o) for i, o in self._projections())
            if self.dora:
                per_layer += sum(o for _, o in self._projections())
            return a.layers * per_layer
        if self.method == "ia3":
            return a.layers * (2 * a.kv_dim + a.intermediate_size)
        if self.method == "prefix_tuning":
            return self.virtual * a.layers * 2 * a.kv_dim
        if self.method == "p_tuning":
            h = a.hidden_size
            return self.virtual * h + 3 * h * h + 2 * h
        return 0

    # --- Memory -----------------------------------------------------------------------

    def _weight_bytes(self) -> float:
        a = self.arch
        if self.full:
            return 4.0 * a.params()  # float32 master weights
        if self.method == "qlora":
            # NF4: half a byte per weight, plus one byte of absmax per 64 weights and a
            # float per 256 blocks (double quantisation); embeddings and norms stay bf16.
            linear = a.layers * a.layer_weights()
            return linear * (0.5 + 1 / 64 + 4 / (64 * 256)) + 2.0 * (a.params() - linear)
        return 2.0 * a.params()

    def _per_token_layer_bytes(self) -> float:
        """Bytes one transformer layer keeps for backward per token of a forward pass."""
        a, c = self.arch, self.config
        h, q, kv, inter = a.hidden_size, a.q_dim, a.kv_dim, a.intermediate_size
        fused_norm = a.model_type in _FUSED_NORM_TYPES
        fused_mlp = a.model_type in _FUSED_MLP_TYPES
        dropout = isinstance(c.lora_dropout, float | int) and c.lora_dropout > 0
        # Full fine-tuning on one GPU runs in float32 with bf16 autocast: the residual stream
        # stays float32 and every linear keeps its own bf16 copy of its input. Sharded, each
        # layer's weights are gathered in bf16 (worker.training.ranks.precision), so it runs
        # as a bf16 model does.
        act = 2
        autocast = self.full and not self.sharded
        residual = 4 if autocast else act
        norm = (residual * h if fused_norm else 4 * h) + 4
        total = a.norms_per_layer * norm
        # Attention: rotated queries and keys, values and output (bf16), log-sum-exp (fp32).
        # Padded batches go through SDPA with a mask, which repeats the key/value heads.
        kv_kept = kv if self.packed else q
        total += act * (2 * q + 2 * kv_kept) + 4 * a.heads
        if a.qk_norm:
            # The per-head query and key norms keep their inputs and one float per head.
            total += act * (q + kv) + 4 * (a.heads + a.kv_heads)
        # MLP: gate and up (fused SwiGLU); unfused also keeps the activation's output.
        total += act * inter * (2 if fused_mlp else 3)
        projections = self._projections()
        if autocast:
            total += act * (3 * h + 2 * h + inter)  # each linear's own bf16 input copy
        elif self.full:
            total += act * (2 * h + inter)  # the normalised inputs and the SwiGLU product
        elif self.fused_lora:
            # Inputs shared by q/k/v, by gate/up; o_proj's is the attention output (above).
            # The down projection's, silu(gate) * up, is recomputed in backward when the
            # SwiGLU and the down projection run as one fused function.
            down_recomputed = fused_mlp and "down_proj" in self._adapted()
            total += act * (2 * h + (0 if down_recomputed else inter))
            assert isinstance(c.lora_r, int)
            total += act * c.lora_r * len(projections)
            if dropout and budget_rule.masks_kept(c.lora_r):
                # Keep masks: a byte an element, a bit for wide inputs (on a GPU the dropout
                # kernels keep none, up to their largest rank).
                total += sum(budget_rule.mask_bytes(i) for i, _ in projections)
        elif self.method in LORA_METHODS:
            # PEFT's LoRA forward: a float32 copy of each adapted input (the dropped-out one
            # when dropout is on) and float32 products; DoRA also keeps the base output and
            # the LoRA output of each projection to rescale them.
            assert isinstance(c.lora_r, int)
            total += sum(4 * i + 4 * c.lora_r for i, _ in projections)
            if dropout:
                total += sum(i for i, _ in projections)
            if self.dora:
                total += sum(8 * o for _, o in projections)
        elif self.method == "ia3":
            # The key and value outputs before scaling, and the MLP's scaled input in float32
            # (the scales are float32).
            total += act * 2 * kv + 4 * inter
        return total

    def _plan(self) -> tuple[int, bool]:
        """The engine's token budget and checkpointing decision: the rule of
        ``worker.spec.budget`` applied to this GPU's memory less what loading the model and
        its adapter takes (the engine applies it to the memory its GPU reports free then).
        Judged with the engine's own rough bytes per token, so the estimate follows the
        engine's decision, not a better one."""
        a, c = self.arch, self.config
        shape = budget_rule.ModelShape(
            a.hidden_size, a.intermediate_size, a.layers, a.layer_weights()
        )
        dropout = c.lora_dropout if isinstance(c.lora_dropout, float | int) else 0.0
        per_token = budget_rule.activation_bytes_per_token(
            shape,
            lora_dropout=float(dropout),
            method=self.method,
            dora=self.dora,
            masks=budget_rule.masks_kept(c.lora_r),
        )
        fixed = budget_rule.fixed_bytes(
            trainable=self.trainable, shape=shape, quantized=self.method == "qlora"
        )
        loaded = self._weight_bytes() + 4 * self.trainable
        free = self.gpu.memory_bytes - _CUDA_CONTEXT_BYTES - loaded
        longest = int(self.longest) if self.packed else self.batch_size * self.padded_width
        chosen = budget_rule.token_budget(
            free_bytes=int(free),
            fixed=fixed,
            per_token=per_token,
            longest=longest,
            explicit=c.micro_batch_tokens,
            cap=budget_rule.largest_useful(shape),
        )
        return (chosen.tokens if self.packed else longest), chosen.checkpointing

    def memory(self) -> dict[str, float]:
        a = self.arch
        tokens = self.peak_row_tokens
        labelled = tokens * self.answer_share
        per_layer = self._per_token_layer_bytes()
        # Trained parameters are float32: adapters, and full fine-tuning's master weights.
        # Full fine-tuning on several GPUs shards them, their gradients and AdamW's moments.
        share = self.ranks if self.sharded else 1
        parts: dict[str, float] = {
            "weights": 0.0 if self.full else self._weight_bytes(),
            "trainable": 4.0 * self.trainable / share,
            "optimizer": 8.0 * self.trainable / share,
        }
        if self.fused_lora:
            parts["adapter_bf16_copies"] = 2.0 * self.trainable
        if self.sharded:
            # The layer a pass runs and the next one, gathered whole in bf16.
            parts["gathered_layers"] = 2 * 2.0 * a.layer_weights()
        elif self.ranks > 1:
            # DDP's buckets: a float32 copy of the gradients, all-reduced in place.
            parts["ddp_gradient_buckets"] = 4.0 * self.trainable
        if self.full and not self.sharded:
            # autocast caches a bf16 copy of every weight for the forward pass (sharded runs
            # gather each layer in bf16 instead, and free it after the layer ran).
            parts["autocast_weight_copies"] = 2.0 * a.params()
        if self.checkpointing:
            layers_kept = a.hidden_size * 2 * a.layers + per_layer
            parts["activations"] = tokens * layers_kept
        else:
            parts["activations"] = tokens * (a.layers * per_layer + 4 * a.hidden_size)
        # Backward's working set: one layer's gradients in flight, the embedding's gradient.
        parts["backward_workspace"] = tokens * (per_layer + 4 * a.hidden_size)
        if not self.packed:
            parts["attention_mask"] = self.batch_size * self.padded_width**2
        parts["loss_head"] = self._loss_head_bytes(tokens, labelled)
        # The peak comes as backward starts, with every activation kept. Gradients appear
        # as backward frees the activations layer by layer: only what they outgrow counts.
        in_flight = parts["activations"] + parts["backward_workspace"] + parts["loss_head"]
        parts["gradients"] = max(0.0, 4.0 * self.trainable / share - in_flight)
        return parts

    def loading_bytes(self) -> float:
        """What a GPU holds while a sharded run's weights come over from host memory
        (``ranks.bring_to_device``): its float32 share, plus one whole part at a time (a
        decoder layer, or the embeddings and head)."""
        if not self.sharded:
            return 0.0
        a = self.arch
        whole_part = max(a.layer_weights(), 2.0 * a.vocab_size * a.hidden_size)
        return 4.0 * (a.params() / self.ranks + whole_part)

    def _loss_head_bytes(self, tokens: float, labelled: float) -> float:
        a = self.arch
        vocab, h = a.vocab_size, a.hidden_size
        if self.plain_head:
            rows = min(labelled, max(1, _CHUNK_ELEMENTS // vocab))
            # Kept for backward: d(loss)/d(hidden) of the labelled rows; in flight: one chunk
            # of logits in bf16, in float32 and logsumexp's float32 temporary.
            kept = 2 * labelled * h
            head_grad = 4.0 * vocab * h if self.full else 0.0
            return kept + rows * vocab * (2 + 4 + 4) + head_grad
        # The model's own head: bf16 logits for every position, float32 log-softmax of the
        # labelled ones kept for backward; soft-capping keeps its tanh output too.
        logits = 2 * tokens * vocab
        kept = 4 * labelled * vocab + (logits if self.arch.logit_softcapping else 0)
        return kept + logits + 2 * labelled * vocab

    # --- Time -------------------------------------------------------------------------

    def mfu(self, tokens: float | None = None) -> float:
        """Utilisation of a forward pass of ``tokens`` (``row_tokens``) tokens."""
        tokens = self.row_tokens if tokens is None else tokens
        params = self.arch.params()
        points = _MFU_POINTS
        if params <= points[0][0]:
            large = points[0][1] * (params / points[0][0]) ** 0.35
        elif params >= points[-1][0]:
            large = points[-1][1]
        else:
            large = points[-1][1]
            for (p0, m0), (p1, m1) in itertools.pairwise(points):
                if p0 <= params <= p1:
                    large = m0 + math.log(params / p0) / math.log(p1 / p0) * (m1 - m0)
                    break
        half_speed = _ROW_OVERHEAD_WORK / max(1, self.arch.layer_weights())
        return large * tokens / (tokens + half_speed)

    def flops_per_token(self) -> float:
        a = self.arch
        # Forward 2 and input-gradient backward 2 FLOPs per weight (the method factors cover
        # the rest); attention ~6 x layers x q_dim x the mean sample length.
        attention = 6 * a.layers * a.q_dim * (self.mean + self.virtual)
        flops = 4 * a.params() + attention
        if self.checkpointing:
            flops += 2 * a.params()  # every layer's forward again in backward
        return flops

    def tokens_per_second(self) -> float:
        if self.cpu is not None:
            rate = self.cpu.training_flops(self.arch.params()) / self.flops_per_token()
        else:
            rate = self.mfu() * self.gpu.bf16_tflops * 1e12 / self.flops_per_token()
        factor = _METHOD_TIME.get(self.method, 1.0)
        if self.method == "qlora":
            factor = _qlora_time(self.arch.params())
        if self.dora:
            factor = _METHOD_TIME["dora"] * (_METHOD_TIME["qlora"] if self.method == "qlora" else 1)
        if self.cpu is None:
            factor *= _GPU_UNFUSED_TIME.get("dora" if self.dora else self.method, 1.0)
        rate /= factor
        if self.graphed():
            rate *= _GRAPH_SPEEDUP
        if not self.packed:
            # Padding: each batch runs to its longest sample.
            rate *= self.mean / max(self.mean, min(self.max_seq, self.longest) + self.virtual)
        return rate

    def graphed(self) -> bool:
        """Whether the engine would replay this run's passes as CUDA graphs."""
        weights = self.arch.layer_weights()
        return (
            self.cpu is None
            and self.ranks == 1
            and self.packed
            and self.plain_head
            and self.method == "lora"
            and not self.dora
            and weights <= _GRAPH_LAYER_WEIGHTS
            and self.row_tokens * weights <= _GRAPH_PASS_WORK
            and self.steps * self.micro_batches >= _GRAPH_MIN_PASSES
        )

    def training_seconds(self) -> float:
        if self.ranks == 1:
            return self.train_tokens / self.tokens_per_second()
        shared = self.train_tokens / self.ranks / self.tokens_per_second()
        return shared + self.steps * self._sync_seconds()

    def _sync_seconds(self) -> float:
        """What a step of a multi-GPU run adds: the ring all-reduce of the float32 gradients
        and the zero-weighted pass that starts it (one mean-length sample); sharded, every
        pass gathers the float32 weights twice (forward, backward) and reduce-scatters their
        gradients."""
        n = self.ranks
        if self.sharded:
            moved = 3 * (n - 1) / n * 4 * self.trainable * self.micro_batches
            return moved / _ALL_REDUCE_BYTES_PER_S + _SYNC_LATENCY_SECONDS
        all_reduce = 2 * (n - 1) / n * 4 * self.trainable / _ALL_REDUCE_BYTES_PER_S
        peak = self.gpu.bf16_tflops * 1e12
        sync_pass = self.mean * self.flops_per_token() / (self.mfu(self.mean) * peak)
        return all_reduce + sync_pass + _SYNC_LATENCY_SECONDS

    def seconds(self) -> dict[str, float]:
        loading = _START_SECONDS + self._weight_bytes() / _LOAD_BYTES_PER_S
        training = self.training_seconds()
        return {
            "loading": round(loading, 1),
            "training": round(training, 1),
            "total": round(loading + training, 1),
        }
