"""The Triton kernels of ``worker.training.kernels`` against the PyTorch chains they stand
for, on a GPU; and on a CPU, that the PyTorch chains are what the fused layers computed
before the kernels existed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

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
