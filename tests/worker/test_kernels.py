"""The Triton kernels of ``worker.training.kernels`` against the PyTorch chains they stand
for, on a GPU; and on a CPU, that the PyTorch chains are what the fused layers computed
before the kernels existed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from worker.spec import budget
from worker.training import kernels


@pytest.fixture
def torch_only() -> Iterator[None]:
    kernels.TRITON = False
    try:
        yield
    finally:
        kernels.TRITON = True


def test_on_a_cpu_the_chains_are_the_plain_computations() -> None:
    torch.manual_seed(0)
    x, weight = torch.randn(5, 24, dtype=torch.bfloat16), torch.randn(24, dtype=torch.bfloat16)
    out, rstd = kernels.rms_norm(x, weight, 1e-6)
    xf = x.float()
    expected_rstd = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)
    assert torch.equal(rstd, expected_rstd)
    assert torch.equal(out, weight * (xf * expected_rstd).to(x.dtype))
    gate, up = torch.randn(3, 40), torch.randn(3, 40)
    assert torch.equal(kernels.silu_mul(gate, up), F.silu(gate) * up)
    grad = torch.randn(3, 40)
    grad_gate, grad_up = kernels.silu_mul_grad(grad, gate, up)
    g, u = gate.clone().requires_grad_(True), up.clone().requires_grad_(True)
    expected = torch.autograd.grad(F.silu(g) * u, (g, u), grad)
    assert torch.allclose(grad_gate, expected[0], atol=1e-6)
    assert torch.allclose(grad_up, expected[1], atol=1e-6)


needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def close(got: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    # float32 reductions summed in another order: at most a unit in the last 16-bit place.
    tolerance = 1e-5 if dtype == torch.float32 else 1e-2
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert torch.allclose(got.float(), expected.float(), rtol=tolerance, atol=tolerance)
    if dtype != torch.float32:
        assert (got != expected).float().mean() < 0.01  # nearly every element to the bit


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("width", [64, 896, 4096, 5120])
def test_the_rms_norm_kernels_compute_the_chain(dtype: torch.dtype, width: int) -> None:
    assert kernels._kernels() is not None
    torch.manual_seed(0)
    x = torch.randn(3, 37, width, device="cuda", dtype=dtype) * 3
    weight = torch.randn(width, device="cuda", dtype=dtype)
    grad = torch.randn(3, 37, width, device="cuda", dtype=dtype)
    out, rstd = kernels.rms_norm(x, weight, 1e-5)
    grad_x = kernels.rms_norm_grad_x(grad, x, weight, rstd)
    kernels.TRITON = False
    try:
        plain_out, plain_rstd = kernels.rms_norm(x, weight, 1e-5)
        plain_grad_x = kernels.rms_norm_grad_x(grad, x, weight, plain_rstd)
    finally:
        kernels.TRITON = True
    assert torch.allclose(rstd, plain_rstd, rtol=1e-5)
    close(out, plain_out, dtype)
    close(grad_x, plain_grad_x, dtype)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("count", [1, 2047, 2049, 8192 * 14336])
def test_the_swiglu_kernels_compute_the_chain(dtype: torch.dtype, count: int) -> None:
    torch.manual_seed(0)
    gate, up, grad = (torch.randn(count, device="cuda", dtype=dtype) * 4 for _ in range(3))
    out = kernels.silu_mul(gate, up)
    grads = kernels.silu_mul_grad(grad, gate, up)
    kernels.TRITON = False
    try:
        plain_out = kernels.silu_mul(gate, up)
        plain_grads = kernels.silu_mul_grad(grad, gate, up)
    finally:
        kernels.TRITON = True
    close(out, plain_out, dtype)
    for got, expected in zip(grads, plain_grads, strict=True):
        close(got, expected, dtype)


@pytest.mark.gpu
@needs_gpu
def test_inputs_the_kernels_do_not_take_go_through_pytorch(torch_only: None) -> None:
    kernels.TRITON = True
    x = torch.randn(8, 16, device="cuda").t()  # not contiguous
    out, _ = kernels.rms_norm(x, torch.ones(8, device="cuda"), 1e-5)
    assert out.shape == x.shape


# --- Dropout inside the LoRA products, the loss head (on by default on a GPU) ----------------


@pytest.fixture
def extra_kernels() -> Iterator[None]:
    """The dropout and loss kernel sets on (their default), whatever a test before left."""
    kernels.DROPOUT = kernels.LOSS = True
    try:
        yield
    finally:
        kernels.DROPOUT = kernels.LOSS = True


@pytest.fixture(params=["philox", "mix"])
def dropout_bits(request: pytest.FixtureRequest, extra_kernels: None) -> Iterator[None]:
    """The extra kernels on, with each way of drawing the dropout kernels' keep bits."""
    kernels.DROPOUT_BITS = request.param
    try:
        yield
    finally:
        kernels.DROPOUT_BITS = "mix"


def test_the_dropout_and_loss_kernels_are_on_by_default() -> None:
    assert kernels.DROPOUT is True and kernels.LOSS is True
    assert kernels.DROPOUT_BITS == "mix"
    # The memory rules (torch-free, for the web's estimate) follow the same switch.
    assert kernels.DROPOUT is budget.DROPOUT_KERNELS
    assert kernels._LORA_MAX_RANK == budget.DROPOUT_KERNEL_MAX_RANK


@pytest.mark.gpu
@needs_gpu
def test_the_keep_bits_follow_the_seed(dropout_bits: None) -> None:
    torch.manual_seed(0)
    seed = kernels.dropout_seed(torch.device("cuda"))
    keep = kernels.dropout_keep(1000, 896, 0.1, seed)
    assert torch.equal(keep, kernels.dropout_keep(1000, 896, 0.1, seed))  # drawn again
    assert abs(keep.float().mean().item() - 0.9) < 0.005
    other = kernels.dropout_keep(1000, 896, 0.1, seed + 1)
    assert (keep != other).float().mean().item() > 0.1
    # A row's bits are not the row before's: positions, not columns, pick them.
    assert (keep[1:] != keep[:-1]).float().mean().item() > 0.1


@pytest.mark.gpu
@needs_gpu
def test_neighbouring_and_reseeded_bits_agree_no_more_than_chance(dropout_bits: None) -> None:
    torch.manual_seed(1)
    p = 0.3
    chance = p * p + (1 - p) * (1 - p)  # two independent draws agree this often
    seed = kernels.dropout_seed(torch.device("cuda"))
    keep = kernels.dropout_keep(2048, 1024, p, seed)
    assert abs(keep.float().mean().item() - (1 - p)) < 0.002
    pairs = {
        "next column": (keep[:, 1:], keep[:, :-1]),
        "next row": (keep[1:], keep[:-1]),
        "next seed": (keep, kernels.dropout_keep(2048, 1024, p, seed + 1)),
        "other seed": (keep, kernels.dropout_keep(2048, 1024, p, seed ^ 0x5A5A5)),
    }
    for name, (one, other) in pairs.items():
        agree = (one == other).float().mean().item()
        assert abs(agree - chance) < 0.003, (name, agree, chance)


def reference_products(
    x: torch.Tensor, a: torch.Tensor, g_b: torch.Tensor, keep: torch.Tensor, p: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """In float64: dropout(x) @ a.T, keep * (g_b @ a) / (1 - p), g_b.T @ (keep * x) / (1 - p)."""
    dropped = torch.where(keep, x.double(), 0.0) / (1 - p)
    down = dropped @ a.double().t()
    grad_x = torch.where(keep, g_b.double() @ a.double(), 0.0) / (1 - p)
    grad_a = g_b.double().t() @ dropped
    return down, grad_x, grad_a


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize(
    ("rows", "width", "rank"),
    [(1, 64, 16), (1037, 896, 16), (513, 200, 8), (2048, 4864, 64), (700, 1152, 128)],
)
def test_the_dropout_lora_kernels_compute_the_products(
    rows: int, width: int, rank: int, dropout_bits: None
) -> None:
    torch.manual_seed(rows + width)
    p = 0.1
    x = torch.randn(rows, width, device="cuda", dtype=torch.bfloat16)
    a = (torch.randn(rank, width, device="cuda") / width**0.5).to(torch.bfloat16)
    g_b = torch.randn(rows, rank, device="cuda", dtype=torch.bfloat16)
    assert kernels.dropout_kernels(x, a)
    seed = kernels.dropout_seed(x.device)
    keep = kernels.dropout_keep(rows, width, p, seed)
    down, grad_x, grad_a = reference_products(x, a, g_b, keep, p)

    got_down = kernels.dropout_down(x, a, p, seed)
    assert got_down.dtype == torch.bfloat16
    assert torch.allclose(got_down.double(), down, rtol=2e-2, atol=2e-2)
    start = torch.randn(rows, width, device="cuda", dtype=torch.bfloat16)
    got_grad_x = kernels.dropout_grad_x_(start.clone(), g_b, a, p, seed, 0.5 / (1 - p))
    expected = start.double() + 0.5 * grad_x
    assert torch.allclose(got_grad_x.double(), expected, rtol=2e-2, atol=2e-2)
    got_grad_a = kernels.dropout_grad_a(g_b, x, p, seed) / (1 - p)
    assert got_grad_a.dtype == torch.float32
    scale = grad_a.abs().max().item() + 1
    assert torch.allclose(got_grad_a.double(), grad_a, rtol=1e-3, atol=1e-4 * scale)
    # Deterministic: the partial sums are added in a fixed order.
    assert torch.equal(
        kernels.dropout_grad_a(g_b, x, p, seed), kernels.dropout_grad_a(g_b, x, p, seed)
    )


@pytest.mark.gpu
@needs_gpu
def test_inputs_the_dropout_kernels_do_not_take(dropout_bits: None) -> None:
    x = torch.randn(8, 64, device="cuda", dtype=torch.bfloat16)
    a = torch.randn(16, 64, device="cuda", dtype=torch.bfloat16)
    assert kernels.dropout_kernels(x, a)
    assert not kernels.dropout_kernels(x.float(), a.float())  # tf32 dots would round
    assert not kernels.dropout_kernels(x, torch.randn(256, 64, device="cuda").bfloat16())
    assert not kernels.dropout_kernels(x.t().contiguous().t(), a[:, :8])
    assert not kernels.dropout_kernels(x.cpu(), a.cpu())


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got.double() - expected).norm() / expected.norm()).item()


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("swiglu", [False, True])
def test_a_fused_lora_linear_with_dropout_uses_the_keep_bits_of_its_seed(
    swiglu: bool, dropout_bits: None
) -> None:
    """The whole fused function (forward, backward) on the kernels' path against float64
    autograd over the same keep bits; no mask is kept, only the seed."""
    from worker.training import fused

    torch.manual_seed(0)
    rows, width, out, rank, p, s = 300, 896, 640, 16, 0.1, 2.0
    cuda = torch.device("cuda")
    x = torch.randn(rows, width, device=cuda, dtype=torch.bfloat16)
    up = torch.randn(rows, width, device=cuda, dtype=torch.bfloat16)
    w = (torch.randn(out, width, device=cuda) / width**0.5).to(torch.bfloat16)
    lora_a = torch.randn(rank, width, device=cuda) / width**0.5
    lora_b = torch.randn(out, rank, device=cuda) / rank**0.5
    grad = torch.randn(rows, out, device=cuda, dtype=torch.bfloat16)
    leaves = [t.clone().requires_grad_(True) for t in (x, up, lora_a, lora_b)]
    state = torch.cuda.get_rng_state()
    seed = kernels.dropout_seed(cuda)
    torch.cuda.set_rng_state(state)  # the function draws this same seed
    if swiglu:
        y = fused._SwiGLULora.apply(leaves[0], leaves[1], w, None, leaves[2], leaves[3], s, p, None)
    else:
        y = fused._LoraLinear.apply(leaves[0], w, None, leaves[2], leaves[3], s, p, None)
    y.backward(grad)
    keep = kernels.dropout_keep(rows, width, p, seed)

    ref = [t.double().requires_grad_(True) for t in (x, up, lora_a, lora_b)]
    h = F.silu(ref[0]) * ref[1] if swiglu else ref[0]
    dropped = torch.where(keep, h, 0.0) / (1 - p)
    expected = h @ w.double().t() + s * (dropped @ ref[2].t()) @ ref[3].t()
    expected.backward(grad.double())
    assert relative_error(y, expected) < 1e-2
    used = [0, 1, 2, 3] if swiglu else [0, 2, 3]
    for i in used:
        got_grad, ref_grad = leaves[i].grad, ref[i].grad
        assert got_grad is not None and ref_grad is not None
        assert relative_error(got_grad, ref_grad) < 2e-2, i


# --- The loss head's cross-entropy ----------------------------------------------------------


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize(("rows", "vocab"), [(1, 64), (300, 50257), (77, 151936)])
def test_the_loss_kernel_gives_the_chains_loss_and_gradients(
    dtype: torch.dtype, rows: int, vocab: int, extra_kernels: None
) -> None:
    """``loss.linear_cross_entropy_sum`` with the kernel against the float32 chain it stands
    for, with row weights and padded rows (``row_multiple``)."""
    from worker.training.loss import linear_cross_entropy_sum

    torch.manual_seed(rows)
    hidden = torch.randn(rows, 64, device="cuda", dtype=dtype)
    weight = (torch.randn(vocab, 64, device="cuda") / 4).to(dtype)
    targets = torch.randint(0, vocab, (rows,), device="cuda")
    weights = (torch.rand(rows, device="cuda") > 0.3).float()

    def run() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = hidden.clone().requires_grad_(True)
        w = weight.clone().requires_grad_(True)
        total = linear_cross_entropy_sum(
            h, w, targets, weights=weights, row_multiple=8, chunk_elements=vocab * 32
        )
        total.backward()
        assert h.grad is not None and w.grad is not None
        return total, h.grad, w.grad

    got = run()
    kernels.LOSS = False  # the fixture turns it back on
    expected = run()
    assert got[0].dtype == torch.float32
    assert torch.allclose(got[0], expected[0], rtol=1e-5, atol=1e-4)
    for g, e in zip(got[1:], expected[1:], strict=True):
        assert g.dtype == e.dtype
        assert relative_error(g, e.double()) < (1e-5 if dtype == torch.float32 else 1e-2)
