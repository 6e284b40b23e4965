"""Leaner forward/backward for the layers LoRA training spends its time and memory in.

Three replacements, each an autograd function written in plain PyTorch (so they run, and are
tested, on the CPU too) and installed on a model's modules for the duration of training only:

- LoRA linear: base projection, dropout, A and B in one function. PEFT's path casts the
  input to the adapters' float32, keeps a dropped-out copy of it for every adapted
  projection and launches a kernel per step; here the adapters compute in the input's dtype
  (bf16 on a GPU) from float32 master weights, and backward keeps the shared input plus a
  one-byte dropout mask instead of a copy.
- QLoRA linear: the same function over a frozen bitsandbytes 4-bit (NF4) weight, which is
  dequantised to the compute dtype for the product in forward and again in backward (one
  layer's 16-bit weight exists at a time; nothing 16-bit is kept between the two), instead
  of PEFT's 4-bit layer plus its float32 LoRA branch.
- RMSNorm (Llama-style ``weight * normalised``): keeps the bf16 input and one float per
  token rather than float32 copies of the whole row.
- SwiGLU (``silu(gate) * up``): keeps gate and up and recomputes the SiLU in backward; where
  the down projection is a fused LoRA linear too, one function runs both and recomputes the
  product (the down projection's input) in backward instead of keeping it.

Dropout keep masks of inputs at least ``PACK_MASK_MIN_WIDTH`` wide are kept eight to a byte.

Each replacement is the same function of its inputs as the module it stands in for, to
float rounding (tests compare them on random inputs). A module whose type or settings this
file does not know keeps its own forward.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from worker.spec.budget import PACK_MASK_MIN_WIDTH
from worker.training import kernels
from worker.training.mask_bits import pack_mask, unpack_mask

# Classes whose forward is exactly ``weight * (x * rsqrt(mean(x^2) + eps)).to(dtype)`` with the
# statistics in float32. Gemma's RMSNorm scales by (1 + weight) and is deliberately absent.
_RMS_NORM_CLASSES = frozenset(
    {
        "LlamaRMSNorm",
        "MistralRMSNorm",
        "Qwen2RMSNorm",
        "Qwen3RMSNorm",
        "Qwen3MoeRMSNorm",
        "OlmoRMSNorm",
        "Olmo2RMSNorm",
        "GraniteRMSNorm",
    }
)
# Classes whose forward is exactly ``down_proj(act_fn(gate_proj(x)) * up_proj(x))``.
_GATED_MLP_CLASSES = frozenset(
    {"LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP", "OlmoMLP", "Olmo2MLP", "GraniteMLP"}
)


@dataclass
class FusedReport:
    """How many modules of each kind run through the fused functions."""

    lora_linear: int = 0
    qlora_linear: int = 0
    rms_norm: int = 0
    gated_mlp: int = 0
    skipped_lora: list[str] = field(default_factory=list)
    patched: list[nn.Module] = field(default_factory=list, repr=False)

    @property
    def fused(self) -> int:
        return self.lora_linear + self.qlora_linear + self.rms_norm + self.gated_mlp

    def lost(self) -> int:
        """How many of the patched modules no longer run the fused forward."""
        return sum(1 for module in self.patched if not _runs_ours(module))


# What a module's instance dictionary held under "forward" before we patched it: usually
# nothing (the class's forward runs), sometimes a wrapper another library installed.
_ABSENT = object()


@contextlib.contextmanager
def fused_modules(model: nn.Module) -> Iterator[FusedReport]:
    """Install the fused forwards on every module of ``model`` that qualifies; undo on exit.

    Undoing restores exactly what each module held before: the instance attribute another
    library set, or none. A module that already runs one of ours (a nested call) is left
    alone, and so is one whose forward something else replaced while we were in place (a
    library re-patching modules mid-run): its forward is then theirs, and deleting it would
    fail or remove their work. ``report.lost()`` counts the patches no longer in place.
    """
    report = FusedReport()
    patched: list[tuple[nn.Module, Any, Any]] = []  # module, what it held, what we set
    try:
        for name, module in model.named_modules():
            if _runs_ours(module):
                continue  # never patch a module twice
            forward = _fused_forward_for(module)
            if forward is None:
                if _is_lora_linear(module):
                    report.skipped_lora.append(name)
                continue
            kind, method = forward
            previous = module.__dict__.get("forward", _ABSENT)
            bound = types.MethodType(method, module)
            module.forward = bound
            patched.append((module, previous, bound))
            setattr(report, kind, getattr(report, kind) + 1)
        report.patched = [module for module, _, _ in patched]
        yield report
    finally:
        for module, previous, bound in reversed(patched):
            if module.__dict__.get("forward") is not bound:
                continue  # replaced by someone else since: theirs stays
            if previous is _ABSENT:
                module.__dict__.pop("forward", None)
            else:
                module.forward = previous


_OUR_FORWARDS: frozenset[Any] = frozenset()  # filled in below, once the functions exist


def _runs_ours(module: nn.Module) -> bool:
    current = module.__dict__.get("forward")
    return getattr(current, "__func__", None) in _OUR_FORWARDS


def _fused_forward_for(module: nn.Module) -> tuple[str, Any] | None:
    if _lora_fusable(module):
        return "lora_linear", _lora_forward
    if _qlora_fusable(module):
        return "qlora_linear", _qlora_forward
    cls = type(module).__name__
    if (
        cls in _RMS_NORM_CLASSES
        and isinstance(getattr(module, "weight", None), torch.Tensor)
        and isinstance(getattr(module, "variance_epsilon", None), float)
    ):
        return "rms_norm", _rms_norm_forward
    if cls in _GATED_MLP_CLASSES and _is_silu(module):
        return "gated_mlp", _gated_mlp_forward
    return None


# --- LoRA linear ---------------------------------------------------------------------------


def _is_lora_linear(module: nn.Module) -> bool:
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(module, LoraLayer) and hasattr(module, "base_layer")


def _lora_fusable(module: nn.Module) -> bool:
    from peft.tuners.lora import Linear as LoraLinear

    # Exact type: quantised subclasses (bitsandbytes, …) have their own base computation.
    if type(module) is not LoraLinear or type(module.base_layer) is not nn.Linear:
        return False
    return _one_plain_adapter(module)


def _one_plain_adapter(module: Any) -> bool:
    """One active, unmerged adapter of plain A and B linears, no variant (DoRA, …), no
    fan-in-fan-out weights, and plain dropout."""
    adapters = list(module.active_adapters)
    if len(adapters) != 1 or module.merged or module.disable_adapters:
        return False
    name = adapters[0]
    if name not in module.lora_A or name in getattr(module, "lora_variant", {}):
        return False  # DoRA and other variants change the computation
    if getattr(module, "fan_in_fan_out", False):
        return False
    if type(module.lora_A[name]) is not nn.Linear or type(module.lora_B[name]) is not nn.Linear:
        return False
    if module.lora_A[name].bias is not None or module.lora_B[name].bias is not None:
        return False
    dropout = module.lora_dropout[name]
    return isinstance(dropout, nn.Identity) or type(dropout) is nn.Dropout


def _lora_args(self: Any) -> tuple[Any, ...]:
    """What ``_LoraLinear`` takes besides the input, for a plain LoRA linear."""
    name = self.active_adapters[0]
    dropout = self.lora_dropout[name]
    p = float(dropout.p) if isinstance(dropout, nn.Dropout) and self.training else 0.0
    base = self.base_layer
    return (
        base.weight,
        base.bias,
        self.lora_A[name].weight,
        self.lora_B[name].weight,
        float(self.scaling[name]),
        p,
        None,
    )


def _lora_forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    out: torch.Tensor = _LoraLinear.apply(x, *_lora_args(self))
    return out


def _qlora_fusable(module: nn.Module) -> bool:
    try:
        import bitsandbytes as bnb
        from peft.tuners.lora.bnb import Linear4bit as LoraLinear4bit
    except ImportError:  # bitsandbytes is installed on GPU workers only
        return False
    if type(module) is not LoraLinear4bit or type(module.base_layer) is not bnb.nn.Linear4bit:
        return False
    weight = module.base_layer.weight
    state = getattr(weight, "quant_state", None)
    if state is None or getattr(state, "shape", None) is None:
        return False  # not quantised yet (still on the CPU)
    return _one_plain_adapter(module)


def _qlora_args(self: Any) -> tuple[Any, ...]:
    """What ``_LoraLinear`` takes besides the input, for a LoRA linear over a 4-bit weight:
    no weight (the packed one never enters autograd: bitsandbytes overrides torch functions)
    but a function that dequantises it."""
    import bitsandbytes.functional as bnb_functional

    packed = self.base_layer.weight
    state = packed.quant_state

    def dequantize() -> torch.Tensor:
        weight: torch.Tensor = bnb_functional.dequantize_4bit(packed.data, state)
        return weight

    _, bias, lora_a, lora_b, scaling, p, _ = _lora_args(self)
    return (None, bias, lora_a, lora_b, scaling, p, dequantize)


def _qlora_forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    out: torch.Tensor = _LoraLinear.apply(x, *_qlora_args(self))
    return out


def _cpu_keep_mask(shape: torch.Size, p: float) -> torch.Tensor:
    """A dropout keep mask for a CPU tensor: each element kept with probability 1 - p (p
    rounded to a multiple of 1/65536), from the default generator, so a seeded run repeats.

    PyTorch's own draw on a CPU (``native_dropout``'s Bernoulli) makes one random number per
    element and costs more than the LoRA products it feeds (a [512, 576] input: 1.5 ms against
    0.1 ms for x A^T on one core). Here one 64-bit draw gives four elements 16 random bits
    each, compared with a threshold: about 4x less time (bench/cpu_train.py). The comparison
    is a clamp of the 16-bit draws to [t - 1, t] (then 0 or 1 after subtracting t - 1), done
    in place on the draw: PyTorch's CPU kernels that make or read ``bool`` tensors run several
    times slower than the same work on 16- or 8-bit integers."""
    count = 1
    for size in shape:
        count *= size
    words = torch.randint(-(2**63), 2**63 - 1, ((count + 3) // 4,), dtype=torch.int64)
    bits = words.view(torch.int16)[:count].view(shape)
    threshold = round(p * 65536) - 32768  # kept where the draw is at least this
    if not -32768 < threshold <= 32767:  # p rounds to 0 or to 1 (drawn all the same)
        return torch.full(shape, threshold <= -32768, dtype=torch.bool)
    kept = bits.clamp_(threshold - 1, threshold).sub_(threshold - 1)
    return kept.to(torch.uint8).view(torch.bool)


def _cpu_keep(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The keep mask as 1s and 0s of ``dtype``, to multiply by: on a CPU a product with it
    costs a seventh of ``torch.where(mask, x, 0)`` (bf16 [1024, 576] on one core: 0.18 ms
    against 0.70 ms, the conversion included), and gives the same values for finite x."""
    return mask.view(torch.uint8).to(dtype)


# Inputs at least PACK_MASK_MIN_WIDTH wide keep their dropout mask packed eight elements to a
# byte (worker.training.mask_bits; the rule and the estimate count it so:
# worker.spec.budget.mask_bytes). At 8B a Llama layer's masks drop from 39 KB to 5 KB a token.
def _lora_product(
    x2: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    a: torch.Tensor,
    b: torch.Tensor,
    scaling: float,
    p: float,
    dequantize: Callable[[], torch.Tensor] | None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """``x2 W^T + b + s * dropout(x2) A^T B^T`` for a [tokens, in] input; also what backward
    needs of the dropout (None without it: the keep mask, packed for wide inputs, or with
    ``kernels.DROPOUT`` on a GPU the seed of the kernels' keep bits, an int64 tensor) and
    ``s * dropout(x2) A^T``: the scaling is applied to this small [tokens, r] product, where
    the dropout kernel and the CPU path scale anyway, so that B's gradient in backward is one
    product (``_grad_b``)."""
    mask: torch.Tensor | None
    if p > 0.0 and kernels.dropout_kernels(x2, a):
        # kernels.DROPOUT (on by default): the keep bits are a function of a seed and each
        # element's position; backward draws them again from the seed, which is all that is
        # kept (kernels.dropout_down).
        mask = kernels.dropout_seed(x2.device)
        xa = kernels.dropout_down(x2, a, p, mask, scaling)
    elif p > 0.0 and x2.device.type == "cpu":
        # The mask alone; s / (1 - p) scales the small [tokens, r] product instead.
        mask = _cpu_keep_mask(x2.shape, p)
        xa = (x2 * _cpu_keep(mask, x2.dtype)) @ a.t()
        xa.mul_(scaling / (1.0 - p))
    else:
        if p > 0.0:
            dropped, mask = torch.native_dropout(x2, p, True)
        else:
            dropped, mask = x2, None
        xa = (dropped @ a.t()).mul_(scaling)
        del dropped
    full = dequantize() if dequantize is not None else weight
    assert full is not None
    out = F.linear(x2, full.to(x2.dtype), None if bias is None else bias.to(x2.dtype))
    del full
    out.addmm_(xa, b.t())
    wide = x2.shape[-1] >= PACK_MASK_MIN_WIDTH and x2.shape[-1] % 8 == 0
    if mask is not None and mask.dtype == torch.bool and wide:
        mask = pack_mask(mask)
    return out, mask, xa


def _lora_grads(
    ctx: Any,
    g: torch.Tensor,
    x2: torch.Tensor | None,
    weight: torch.Tensor | None,
    mask: torch.Tensor | None,
    a: torch.Tensor,
    b: torch.Tensor,
    xa: torch.Tensor,
) -> tuple[torch.Tensor | None, ...]:
    """The gradients of ``_lora_product`` for the output gradient ``g`` [tokens, out]: of its
    input (still [tokens, in]), the weight, the bias, A and B. ``x2`` may be None where
    neither A's nor the weight's gradient is needed."""
    need_x, need_w, need_bias, need_a, need_b = ctx.lora_needs
    w_dtype, bias_dtype, a_dtype, b_dtype = ctx.dtypes
    s, p = ctx.scaling, ctx.p
    seeded = mask is not None and mask.dtype == torch.int64  # kernels.dropout_seed
    if mask is not None and mask.dtype == torch.uint8:
        mask = unpack_mask(mask)
    # On a CPU the keep mask as 1s and 0s, made once for both of its uses below.
    keep = _cpu_keep(mask, g.dtype) if mask is not None and mask.device.type == "cpu" else None
    g_b = g @ b if (need_x or need_a) else None  # [tokens, r]
    grad_x = grad_w = grad_bias = grad_a = grad_b = None
    if need_x:
        assert g_b is not None
        full = ctx.dequantize() if ctx.dequantize is not None else weight
        assert full is not None
        grad_x = g @ full.to(g.dtype)
        del full
        if mask is None:
            grad_x.addmm_(g_b, a, alpha=s)
        elif seeded:
            kernels.dropout_grad_x_(grad_x, g_b, a, p, mask, s / (1.0 - p))
        elif keep is not None:
            grad_x.add_((g_b @ a).mul_(keep), alpha=s / (1.0 - p))
        else:
            grad_x += torch.ops.aten.native_dropout_backward(g_b @ a, mask, s / (1.0 - p))
    if need_a:
        assert g_b is not None and x2 is not None
        if seeded:
            assert mask is not None
            grad_a = kernels.dropout_grad_a(g_b, x2, p, mask, s / (1.0 - p)).to(a_dtype)
        elif keep is not None:
            grad_a = (g_b.t() @ (x2 * keep)).mul_(s / (1.0 - p)).to(a_dtype)
        else:
            dropped = (
                x2
                if mask is None
                else torch.ops.aten.native_dropout_backward(x2, mask, 1 / (1 - p))
            )
            grad_a = (g_b.t() @ dropped).mul_(s).to(a_dtype)
    if need_b:
        grad_b = _grad_b(g, xa, b_dtype)
    if need_w:  # never for a quantised weight, which is frozen
        assert x2 is not None
        grad_w = (g.t() @ x2).to(w_dtype)
    if need_bias:
        grad_bias = g.sum(0).to(bias_dtype)
    return grad_x, grad_w, grad_bias, grad_a, grad_b


# torch.mm's out_dtype (CUDA, 16-bit inputs to a float32 result; torch 2.8 and later)
_MM_OUT_DTYPE = hasattr(torch.ops.aten.mm, "dtype")


def _grad_b(g: torch.Tensor, xa: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """B's gradient ``g^T (s dropout(x) A^T)``, in B's dtype. On a GPU a 16-bit product is
    written in float32 by the matmul itself (one kernel, and not rounded to 16 bits first);
    inside a compiled layer inductor fuses the cast into the product's epilogue itself."""
    global _MM_OUT_DTYPE
    if (
        _MM_OUT_DTYPE
        and g.is_cuda
        and not torch.compiler.is_compiling()
        and dtype == torch.float32
        and g.dtype in (torch.bfloat16, torch.float16)
        and xa.dtype == g.dtype
    ):
        try:
            return torch.mm(g.t(), xa, out_dtype=dtype)
        except (RuntimeError, TypeError):  # a build without it for this GPU: the two kernels
            _MM_OUT_DTYPE = False
    return (g.t() @ xa).to(dtype)


def _remember(
    ctx: Any,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    scaling: float,
    p: float,
    dequantize: Callable[[], torch.Tensor] | None,
    needs: tuple[bool, ...],
) -> None:
    ctx.scaling, ctx.p, ctx.dequantize, ctx.lora_needs = scaling, p, dequantize, needs
    ctx.dtypes = (
        None if weight is None else weight.dtype,
        None if bias is None else bias.dtype,
        lora_a.dtype,
        lora_b.dtype,
    )


class _LoraLinear(torch.autograd.Function):
    """y = x W^T + b + s * dropout(x) A^T B^T, A and B cast to x's dtype for the products.

    With ``dequantize`` (and ``weight`` None), ``dequantize()`` gives a frozen quantised
    weight in 16 bits, called in forward and again in backward rather than kept."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor | None,
        bias: torch.Tensor | None,
        lora_a: torch.Tensor,
        lora_b: torch.Tensor,
        scaling: float,
        p: float,
        dequantize: Callable[[], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        a = lora_a.to(x.dtype)
        b = lora_b.to(x.dtype)
        out, mask, xa = _lora_product(x2, weight, bias, a, b, scaling, p, dequantize)
        ctx.save_for_backward(x2, weight, mask, a, b, xa)
        _remember(
            ctx, weight, bias, lora_a, lora_b, scaling, p, dequantize, ctx.needs_input_grad[:5]
        )
        ctx.shape = shape
        return out.view(*shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        x2, weight, mask, a, b, xa = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])
        grad_x, grad_w, grad_bias, grad_a, grad_b = _lora_grads(ctx, g, x2, weight, mask, a, b, xa)
        if grad_x is not None:
            grad_x = grad_x.view(ctx.shape)
        return grad_x, grad_w, grad_bias, grad_a, grad_b, None, None, None


# --- RMSNorm -------------------------------------------------------------------------------


def _rms_norm_forward(self: Any, hidden_states: torch.Tensor) -> torch.Tensor:
    out: torch.Tensor = _RMSNorm.apply(hidden_states, self.weight, self.variance_epsilon)
    return out


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        out, rstd = kernels.rms_norm(x, weight, eps)
        ctx.save_for_backward(x, weight, rstd)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        x, weight, rstd = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[:2]
        grad_x = grad_w = None
        if need_w:  # a trained norm (full fine-tuning)
            normed = (x.float() * rstd).to(x.dtype)
            grad_w = (grad * normed).float().reshape(-1, x.shape[-1]).sum(0).to(weight.dtype)
        if need_x:
            grad_x = kernels.rms_norm_grad_x(grad.contiguous(), x, weight, rstd)
        return grad_x, grad_w, None


# --- SwiGLU --------------------------------------------------------------------------------


def _is_silu(module: nn.Module) -> bool:
    config = getattr(module, "config", None)
    act = getattr(config, "hidden_act", getattr(config, "hidden_activation", None))
    return act in ("silu", "swish") and all(
        isinstance(getattr(module, name, None), nn.Module)
        for name in ("gate_proj", "up_proj", "down_proj")
    )


def _gated_mlp_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    gate, up = self.gate_proj(x), self.up_proj(x)
    down = self.down_proj
    ours = getattr(down.__dict__.get("forward"), "__func__", None)
    if ours is _lora_forward or ours is _qlora_forward:
        # The down projection runs through ours too: one function for both, so that the
        # product silu(gate) * up, the down projection's input, is recomputed in backward
        # from gate and up (kept anyway) rather than kept as well.
        args = _lora_args(down) if ours is _lora_forward else _qlora_args(down)
        fused_out: torch.Tensor = _SwiGLULora.apply(gate, up, *args)
        return fused_out
    hidden: torch.Tensor = _SiluMul.apply(gate, up)
    out: torch.Tensor = down(hidden)
    return out


class _SiluMul(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(gate, up)
        return kernels.silu_mul(gate, up)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        gate, up = ctx.saved_tensors
        # What autograd would compute for silu(gate) * up, with silu recomputed.
        grad_gate, grad_up = kernels.silu_mul_grad(grad.contiguous(), gate, up)
        return grad_gate, grad_up


class _SwiGLULora(torch.autograd.Function):
    """``_LoraLinear`` of ``silu(gate) * up``, keeping gate and up but not their product."""

    @staticmethod
    def forward(
        ctx: Any,
        gate: torch.Tensor,
        up: torch.Tensor,
        weight: torch.Tensor | None,
        bias: torch.Tensor | None,
        lora_a: torch.Tensor,
        lora_b: torch.Tensor,
        scaling: float,
        p: float,
        dequantize: Callable[[], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        shape = gate.shape
        h = kernels.silu_mul(gate, up).reshape(-1, shape[-1])
        a = lora_a.to(h.dtype)
        b = lora_b.to(h.dtype)
        out, mask, xa = _lora_product(h, weight, bias, a, b, scaling, p, dequantize)
        del h
        ctx.save_for_backward(gate, up, weight, mask, a, b, xa)
        needs = (any(ctx.needs_input_grad[:2]), *ctx.needs_input_grad[2:6])
        _remember(ctx, weight, bias, lora_a, lora_b, scaling, p, dequantize, needs)
        return out.view(*shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        gate, up, weight, mask, a, b, xa = ctx.saved_tensors
        _, need_w, _, need_a, _ = ctx.lora_needs
        h = kernels.silu_mul(gate, up).reshape(-1, gate.shape[-1]) if (need_a or need_w) else None
        g = grad.reshape(-1, grad.shape[-1])
        grad_h, grad_w, grad_bias, grad_a, grad_b = _lora_grads(ctx, g, h, weight, mask, a, b, xa)
        del h
        grad_gate = grad_up = None
        if grad_h is not None:
            grad_gate, grad_up = kernels.silu_mul_grad(grad_h.view(gate.shape), gate, up)
        return grad_gate, grad_up, grad_w, grad_bias, grad_a, grad_b, None, None, None


_OUR_FORWARDS = frozenset({_lora_forward, _qlora_forward, _rms_norm_forward, _gated_mlp_forward})
