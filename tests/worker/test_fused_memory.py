"""What the fused layers keep for backward (CPU): dropout keep masks of wide inputs packed
eight to a byte, and the SwiGLU product that feeds a fused down projection recomputed rather
than kept; both give the same numbers as the plain computation."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaMLP

from worker.spec import budget as rule
from worker.training import fused, kernels, mask_bits

WIDE = rule.PACK_MASK_MIN_WIDTH


def every_byte() -> tuple[torch.Tensor, torch.Tensor]:
    """The 256 masks of eight elements, and each one's byte (element k at bit k)."""
    values = torch.arange(256)
    bits = (values[:, None] >> torch.arange(8)[None, :]) & 1
    return bits.bool(), values.to(torch.uint8)[:, None]


def test_a_packed_mask_unpacks_to_itself() -> None:
    masks, values = every_byte()
    assert torch.equal(mask_bits.pack_mask(masks), values)
    assert torch.equal(mask_bits.unpack_mask(values), masks)
    torch.manual_seed(0)
    for rows, width in ((3, WIDE), (5, 16), (1, 8), (0, 16)):
        mask = torch.rand(rows, width) > 0.3
        packed = mask_bits.pack_mask(mask)
        assert packed.dtype == torch.uint8 and packed.shape == (rows, width // 8)
        assert torch.equal(mask_bits.unpack_mask(packed), mask)
    with pytest.raises(ValueError, match="whole bytes"):
        mask_bits.pack_mask(torch.ones(2, 12, dtype=torch.bool))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_gpu_kernels_pack_as_the_cpu_does() -> None:
    assert kernels._kernels() is not None  # Triton comes with torch on CUDA
    masks, values = every_byte()
    assert torch.equal(mask_bits.pack_mask(masks.cuda()).cpu(), values)
    assert torch.equal(mask_bits.unpack_mask(values.cuda()).cpu(), masks)
    torch.manual_seed(0)
    # Sizes around the kernels' block of 1,024 packed bytes, and an 8B layer's down input.
    for rows, width in ((1, 8 * 1024), (3, 8 * 1023), (7, 8 * 1025), (8192, 14336), (0, 64)):
        mask = torch.rand(rows, width, device="cuda") > 0.05
        packed = mask_bits.pack_mask(mask)
        assert torch.equal(packed.cpu(), mask_bits.pack_mask(mask.cpu()))
        assert torch.equal(mask_bits.unpack_mask(packed), mask)


class SavedBytes:
    """Bytes of the distinct tensors autograd keeps for backward while it is entered, but
    the model's own weights (kept by reference)."""

    def __init__(self, model: nn.Module | None = None) -> None:
        self.storages: dict[int, int] = {}
        self.dtypes: list[tuple[torch.dtype, tuple[int, ...]]] = []
        self.weights = {
            p.untyped_storage().data_ptr() for p in (model.parameters() if model else ())
        }

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() in self.weights:
            return tensor
        self.storages[storage.data_ptr()] = storage.nbytes()
        self.dtypes.append((tensor.dtype, tuple(tensor.shape)))
        return tensor

    def __enter__(self) -> SavedBytes:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)

    @property
    def total(self) -> int:
        return sum(self.storages.values())


def lora_linear(width: int, out: int, dropout: float) -> Any:
    torch.manual_seed(0)
    base = nn.Sequential()
    base.add_module("proj", nn.Linear(width, out, bias=False))
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=["proj"],
                        init_lora_weights=False)  # fmt: skip
    model = get_peft_model(base, config)
    model.train()
    return model


def test_a_wide_inputs_dropout_mask_is_kept_packed_and_gives_the_plain_gradients() -> None:
    model = lora_linear(WIDE, 24, dropout=0.25)
    layer = model.base_model.model.proj
    x = torch.randn(33, WIDE, requires_grad=True)

    with fused.fused_modules(model), SavedBytes() as saved:
        torch.manual_seed(7)
        out = layer(x)
    masks = [shape for dtype, shape in saved.dtypes if dtype in (torch.uint8, torch.bool)]
    assert masks == [(33, WIDE // 8)]  # one bit an element, not one byte
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (x, layer.lora_A["default"].weight), grad)

    # The plain computation with the same draw (the CPU path's keep mask, fused._cpu_keep_mask).
    torch.manual_seed(7)
    keep = fused._cpu_keep_mask(torch.Size((33, WIDE)), 0.25)
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    dropped = torch.where(keep, x, 0) / 0.75
    plain = x @ layer.base_layer.weight.t() + layer.scaling["default"] * (dropped @ a.t() @ b.t())
    expected = torch.autograd.grad(plain, (x, a), grad)
    assert torch.allclose(out, plain, atol=1e-5)
    for g, e in zip(got, expected, strict=True):
        assert torch.allclose(g, e, atol=1e-5, rtol=1e-5)


def mlp(hidden: int, intermediate: int, dropout: float) -> Any:
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=intermediate,
        hidden_act="silu",
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    base = nn.Sequential()
    base.add_module("mlp", LlamaMLP(config))
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, init_lora_weights=False,
                      target_modules=["gate_proj", "up_proj", "down_proj"])  # fmt: skip
    model = get_peft_model(base, lora).to(torch.bfloat16)
    model.train()
    return model


def test_a_fused_mlp_keeps_gate_and_up_but_not_their_product() -> None:
    hidden, intermediate, tokens = 64, WIDE, 512
    model = mlp(hidden, intermediate, dropout=0.1)
    module = model.base_model.model.mlp
    x = torch.randn(1, tokens, hidden, dtype=torch.bfloat16, requires_grad=True)

    with fused.fused_modules(model) as report, SavedBytes(model) as saved:
        out = module(x)
    assert report.lora_linear == 3 and report.gated_mlp == 1
    # Gate and up (2 bytes each), the shared input, a byte mask for each narrow input and a
    # bit mask for the wide one, and the small [tokens, r] products; nothing intermediate-wide
    # beyond gate and up.
    expected = 2 * 2 * intermediate + 2 * hidden + 2 * hidden + intermediate // 8 + 3 * 2 * 4
    assert saved.total == expected * tokens
    # The budget rule counts the same for a layer of these sizes (its attention part aside).
    shape = rule.ModelShape(hidden, intermediate, layers=1)
    rule_mlp = rule.activation_bytes_per_token(shape, lora_dropout=0.1) - 2 * 8 * hidden
    rule_mlp -= 4 * rule.mask_bytes(hidden)  # the attention projections' masks
    assert rule_mlp == 2 * 2 * intermediate + 2 * rule.mask_bytes(hidden) + intermediate // 8
    out.float().square().mean().backward()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_with_the_dropout_kernels_a_fused_mlp_keeps_no_mask() -> None:
    assert kernels.DROPOUT  # the default on a GPU (worker.training.kernels)
    hidden, intermediate, tokens = 64, WIDE, 512
    model = mlp(hidden, intermediate, dropout=0.1).cuda()
    module = model.base_model.model.mlp
    x = torch.randn(1, tokens, hidden, dtype=torch.bfloat16, device="cuda", requires_grad=True)

    with fused.fused_modules(model), SavedBytes(model) as saved:
        out = module(x)
    masks = [shape for dtype, shape in saved.dtypes if dtype in (torch.uint8, torch.bool)]
    assert masks == []
    seeds = [shape for dtype, shape in saved.dtypes if dtype == torch.int64]
    assert seeds == [(1,)] * 3  # one per adapted projection, 8 bytes each
    # Gate, up, the shared input and the [tokens, r] products: the CPU test's count above
    # without its masks (a byte for each narrow input, a bit for the wide one).
    assert saved.total == (2 * 2 * intermediate + 2 * hidden + 3 * 2 * 4) * tokens + 3 * 8
    # The budget rule without masks counts the same (its attention part aside).
    assert rule.masks_kept(4) is False
    shape = rule.ModelShape(hidden, intermediate, layers=1)
    rule_mlp = rule.activation_bytes_per_token(shape, lora_dropout=0.1, masks=False)
    assert rule_mlp - 2 * 8 * hidden == 2 * 2 * intermediate
    out.float().square().mean().backward()


def test_the_fused_mlp_computes_what_peft_computes_without_dropout() -> None:
    model = mlp(32, WIDE, dropout=0.0)
    module = model.base_model.model.mlp
    x = torch.randn(2, 9, 32, dtype=torch.bfloat16)

    def run() -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        model.zero_grad(set_to_none=True)
        inp = x.clone().float().requires_grad_(True)
        out = module(inp.to(torch.bfloat16))
        out.float().square().mean().backward()
        grads = {n: p.grad.float() for n, p in model.named_parameters() if p.grad is not None}
        assert inp.grad is not None
        return out.float(), grads, inp.grad

    plain_out, plain_grads, plain_x = run()
    with fused.fused_modules(model):
        out, grads, grad_x = run()
    assert len(grads) == 6
    assert torch.allclose(out, plain_out, rtol=2e-2, atol=2e-2)

    def close(a: torch.Tensor, b: torch.Tensor) -> bool:
        return float((a - b).norm() / b.norm()) < 2e-2

    assert close(grad_x, plain_x)
    for name, grad in plain_grads.items():
        assert close(grads[name], grad), name


def test_the_fused_mlp_in_float32_matches_the_plain_one_to_rounding() -> None:
    model = mlp(16, 40, dropout=0.0).float()
    module = model.base_model.model.mlp
    x = torch.randn(3, 5, 16, dtype=torch.float64).float().requires_grad_(True)
    trained = [x, *(p for p in model.parameters() if p.requires_grad)]
    plain = module(x)
    expected = torch.autograd.grad(plain.square().sum(), trained)
    with fused.fused_modules(model) as report:
        out = module(x)
        got = torch.autograd.grad(out.square().sum(), trained)
    assert report.gated_mlp == 1
    assert torch.allclose(out, plain, atol=1e-6)
    for g, e in zip(got, expected, strict=True):
        assert torch.allclose(g, e, atol=1e-5, rtol=1e-5)
