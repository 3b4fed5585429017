"""The fused Chamfer loss op: its contract on any machine (schema, fake kernels, autograd, the
backward formula the CUDA kernel implements, when chamfer_distance routes to it) and, on a GPU,
the CUDA kernel against the chamfer op + torch reductions."""

import pytest
import torch

from recon_fast import ops
from recon_fast.ops import chamfer_loss as fused

REDUCTIONS = list(fused.REDUCTIONS.items())
pytestmark = pytest.mark.skipif(not fused.DEFINED,
                                reason="recon_fast._C predates the chamfer_loss op: rebuild it")


def unfused_loss(x, y, norm, reduction):
    """chamfer_distance through the chamfer op and torch reductions (never the fused op)."""
    lengths = [torch.full((t.shape[0],), t.shape[1], device=t.device) for t in (x, y)]
    return ops.chamfer_distance(x, y, *lengths, norm=norm, reduction=reduction)


@pytest.mark.parametrize("norm", [1, 2])
@pytest.mark.parametrize("name,code", REDUCTIONS)
def test_opcheck_on_cpu(norm, name, code):
    x = torch.rand(3, 7, 3, dtype=torch.float64, requires_grad=True)
    y = torch.rand(3, 5, 3, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.recon_fast.chamfer_loss.default, (x, y, norm, code))


@pytest.mark.parametrize("norm", [1, 2])
@pytest.mark.parametrize("name,code", REDUCTIONS)
def test_loss_and_backward_formula_match_autograd_of_the_unfused_loss(norm, name, code):
    # The CPU kernels state the formulas the CUDA kernels implement (1/N and 1/M weights, the
    # halving of norm 1, clamp_min's zero gradient, the reduction's 1/B).
    x = torch.rand(4, 9, 3, dtype=torch.float64, requires_grad=True)
    y = torch.rand(4, 6, 3, dtype=torch.float64, requires_grad=True)
    y.data[1, 2] = x.data[1, 3]  # an exact match: distance 0
    loss, idx_xy, idx_yx = torch.ops.recon_fast.chamfer_loss(x, y, norm, code)
    want = unfused_loss(x, y, norm, name)
    torch.testing.assert_close(loss, want)
    grad_out = torch.rand_like(want)
    got = torch.autograd.grad(loss, (x, y), grad_out)
    expected = torch.autograd.grad(want, (x, y), grad_out)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)
    result = ops.chamfer(x, y)
    assert torch.equal(idx_xy, result.idx_xy) and torch.equal(idx_yx, result.idx_yx)


def test_fused_loss_applies_to_small_full_cuda_clouds_only(monkeypatch):
    from torch._subclasses.fake_tensor import FakeTensorMode

    monkeypatch.setattr(fused, "_CUDA_KERNEL", True)
    with FakeTensorMode():  # CUDA tensors without a GPU
        small = torch.empty(8, 32, 3, device="cuda")
        big = torch.empty(8, fused.MAX_FUSED_POINTS + 1, 3, device="cuda")
        half = torch.empty(8, 32, 3, device="cuda", dtype=torch.float16)
    lengths = torch.full((8,), 32)
    assert fused.fused_loss_applies(small, small, None, None)
    assert not fused.fused_loss_applies(small, big, None, None)
    assert not fused.fused_loss_applies(small, small, lengths, None)
    assert not fused.fused_loss_applies(half, half, None, None)  # chamfer_distance upcasts first
    assert not fused.fused_loss_applies(torch.rand(8, 32, 3), torch.rand(8, 32, 3), None, None)
    monkeypatch.setattr(fused, "_CUDA_KERNEL", False)  # an extension built without it
    assert not fused.fused_loss_applies(small, small, None, None)


# ---------------------------------------------------------------------------------- CUDA kernel

GPU_CASES = [(4864, 32, 32, torch.float32), (7, 17, 256, torch.float32), (5, 256, 1, torch.float64),
             (3, 64, 40, torch.float64)]


@pytest.mark.cuda
@pytest.mark.parametrize("B,N,M,dtype", GPU_CASES)
@pytest.mark.parametrize("norm", [1, 2])
@pytest.mark.parametrize("name,code", REDUCTIONS)
def test_cuda_kernel_matches_the_unfused_loss(B, N, M, dtype, norm, name, code):
    if not fused._CUDA_KERNEL:
        pytest.skip("recon_fast was built without the CUDA chamfer_loss kernel")
    x = torch.rand(B, N, 3, device="cuda", dtype=dtype, requires_grad=True)
    y = torch.rand(B, M, 3, device="cuda", dtype=dtype, requires_grad=True)
    with torch.no_grad():
        y[0, 0] = x[0, 0]  # an exact match
    loss, idx_xy, idx_yx = torch.ops.recon_fast.chamfer_loss(x, y, norm, code)
    want = unfused_loss(x, y, norm, name)
    tol = dict(atol=1e-6, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(loss, want, **tol)
    result = ops.chamfer(x.detach(), y.detach())
    assert torch.equal(idx_xy, result.idx_xy) and torch.equal(idx_yx, result.idx_yx)
    grad_out = torch.rand_like(want)
    got = torch.autograd.grad(loss, (x, y), grad_out)
    expected = torch.autograd.grad(want, (x, y), grad_out)
    for g, e in zip(got, expected):
        assert g.is_contiguous()
        torch.testing.assert_close(g, e, **tol)


@pytest.mark.cuda
def test_cuda_kernel_keeps_the_lowest_index_among_ties():
    if not fused._CUDA_KERNEL:
        pytest.skip("recon_fast was built without the CUDA chamfer_loss kernel")
    x = torch.randint(0, 3, (64, 32, 3), device="cuda").float()  # integer grid: exact ties
    y = torch.randint(0, 3, (64, 32, 3), device="cuda").float()
    _, idx_xy, idx_yx = torch.ops.recon_fast.chamfer_loss(x, y, 2, 0)
    result = ops.chamfer(x, y)
    assert torch.equal(idx_xy, result.idx_xy) and torch.equal(idx_yx, result.idx_yx)


@pytest.mark.cuda
def test_chamfer_distance_uses_the_fused_op_on_cuda():
    if not fused._CUDA_KERNEL:
        pytest.skip("recon_fast was built without the CUDA chamfer_loss kernel")
    x, y = torch.rand(38, 32, 3, device="cuda"), torch.rand(38, 32, 3, device="cuda")
    assert fused.fused_loss_applies(x, y, None, None)
    direct, _, _ = torch.ops.recon_fast.chamfer_loss(x, y, 2, fused.REDUCTIONS["mean"])
    assert torch.equal(ops.chamfer_distance(x, y), direct)
