"""The CPU path: what a run changes when its worker has no CUDA device.

The GPU path (fused layers, large packed rows, float32 master weights for full fine-tuning)
was built for tensor cores. On a CPU each choice was measured again with
``bench/cpu_train.py`` (SmolLM2-135M and a Qwen2.5-0.5B shape, LoRA r16 on every linear layer,
8 samples per step) and only what won there is kept:

- **bfloat16 where the processor computes in it** (AVX-512 BF16 or AMX): the frozen weights
  are loaded in bfloat16 and the adapters keep float32 master weights, as on a GPU; full
  fine-tuning keeps float32 weights and computes under bfloat16 autocast. Elsewhere float32.
  (4.1 s per step against 9.4 s in float32, same layers and rows.)
- **The engine's fused layers** (LoRA linear, RMSNorm, SwiGLU) stay on: in bfloat16 they
  beat PyTorch's own layers on a CPU too (4.0 against 4.9 s per step, SmolLM2, one thread).
- **Packed rows of at most ``CPU_TOKEN_BUDGET`` tokens**: no padding (padded bfloat16
  batches took 8.5-10.5 s per step against 4.0 packed), and passes far smaller than a GPU's,
  which keep the activations, and so the resident memory, of a laptop's size at no cost in
  speed (one thread: 3.9 s per step at 1,024 tokens against 4.3 s in one row of 32,768; peak
  RSS 2.5 GiB at 1,024 tokens, 2.0 GiB at 512, model and tokenizer included).
- **A smaller chunk of logits in the loss**, so the head never holds much more than the
  activations do.
- **One intra-op thread per physical core** (hyper-threads slow matrix work down), unless
  ``OMP_NUM_THREADS`` says otherwise.
- **Memory that stays flat over a whole run.** Two things made the resident memory of a
  SmolLM2 run grow by about 40 MB a step (2.88 GiB peak after 25 steps): oneDNN keeps the
  kernels it generates for every distinct matrix shape (up to 1,024 of them), and packed passes
  of any length from 1 to 512 tokens made hundreds of shapes; and glibc's allocator kept the
  freed activations of earlier steps in its heap, fragmented, instead of returning them. So a
  packed pass on a CPU is padded to a multiple of ``CPU_ROW_MULTIPLE`` tokens (eight lengths
  up to 512; the filler predicts nothing), the loss head's products (one row per labelled
  token) to a multiple of ``CPU_LOSS_ROW_MULTIPLE`` rows, and blocks of ``MMAP_THRESHOLD`` bytes and more are
  allocated with mmap, which frees them back to the system (``limit_heap_growth``; glibc only,
  ``TUNELAB_CPU_MMAP_THRESHOLD=0`` leaves the allocator as it is). Peak RSS over the same 25
  steps: 1.80 GiB, the model, tokenizer and libraries included, flat from the tenth step.

Torch is imported by the engine only; ``bf16_capable`` and ``physical_cores`` read the
processor's description without it, so the web process and the estimates can ask too.
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path

# Float32 elements of one chunk of the loss head's logits on a CPU (2**23 x 4 bytes = 32 MiB,
# about 170 rows of a 49k vocabulary): large enough for efficient products, small next to
# the activations.
CPU_CHUNK_ELEMENTS = 2**23

_CPUINFO = Path("/proc/cpuinfo")
# Processor flags under which oneDNN runs bfloat16 matrix products natively.
_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The processor's feature flags (Linux); empty where they cannot be read."""
    try:
        text = _CPUINFO.read_text(encoding="ascii", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def bf16_capable() -> bool:
    """Whether this processor computes bfloat16 matrix products natively.

    ``TUNELAB_CPU_BF16=0`` (or ``1``) overrides the detection, for processors whose flags
    mislead or to compare both paths.
    """
    forced = os.environ.get("TUNELAB_CPU_BF16", "").strip().lower()
    if forced in ("0", "false", "no", "off"):
        return False
    if forced in ("1", "true", "yes", "on"):
        return True
    if platform.machine().lower() in ("arm64", "aarch64") and platform.system() == "Darwin":
        return True  # Apple silicon from M2 on; M1 falls back inside PyTorch, still correct
    return bool(cpu_flags() & _BF16_FLAGS)


@lru_cache(maxsize=1)
def physical_cores() -> int:
    """Physical cores (not hyper-threads) this process may run on."""
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        allowed = set(range(os.cpu_count() or 1))
    cores: set[tuple[str, str]] = set()
    try:
        for cpu in allowed:
            topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
            cores.add((package, core))
    except OSError:
        return max(1, len(allowed))
    return max(1, len(cores))


def configure_threads() -> int:
    """Set torch's intra-op threads to the physical cores, unless OMP_NUM_THREADS is set
    (a test suite or an admin sharing the machine); returns the number in use."""
    import torch

    if not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(physical_cores())
    return int(torch.get_num_threads())


def limit_heap_growth() -> int | None:
    """Have glibc serve blocks of ``MMAP_THRESHOLD`` bytes or more with mmap (freed straight
    back to the system) rather than from its heap, whose free space fragments over a run; the
    threshold in use, or None where this is not glibc or it is turned off."""
    import ctypes
    import ctypes.util

    try:
        threshold = int(os.environ.get("TUNELAB_CPU_MMAP_THRESHOLD", MMAP_THRESHOLD))
    except ValueError:
        threshold = MMAP_THRESHOLD
    if threshold <= 0 or platform.system() != "Linux":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return None
    if mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(threshold)) != 1:
        return None
    return threshold


# glibc's mallopt parameter (malloc.h) and the size from which CPU runs allocate with mmap.
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 20

# Packed passes on a CPU are padded to a multiple of this many tokens, and the loss head's
# products to a multiple of this many rows (see the docstring).
CPU_ROW_MULTIPLE = 64
CPU_LOSS_ROW_MULTIPLE = 32

# Whether CPU runs use the engine's fused layers (see the module's docstring).
FUSED_LAYERS = True
# Tokens per packed pass on a CPU (a longer sample gets a pass of its own length).
CPU_TOKEN_BUDGET = 512


def calibrate(seconds: float = 0.5) -> dict[str, object]:
    """Measure this CPU's matrix-product rate in the dtype training computes in, on the
    threads training uses: what the estimates scale CPU run times by (see
    ``worker.spec.cpu_time``). Takes about ``seconds`` plus a warm-up."""
    import time

    import torch

    threads = configure_threads()
    dtype = torch.bfloat16 if bf16_capable() else torch.float32
    generator = torch.Generator().manual_seed(0)
    # The shape of a small model's projection over a packed pass.
    a = torch.randn(1024, 1024, generator=generator).to(dtype)
    b = torch.randn(1024, 2048, generator=generator).to(dtype)
    for _ in range(3):
        a @ b
    runs, started = 0, time.perf_counter()
    while True:
        a @ b
        runs += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            break
    return {
        "matmul_gflops": round(2 * 1024 * 1024 * 2048 * runs / elapsed / 1e9, 1),
        "dtype": str(dtype).removeprefix("torch."),
        "threads": threads,
        "processor": processor_name(),
    }


def processor_name() -> str:
    try:
        for line in _CPUINFO.read_text(encoding="ascii", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
