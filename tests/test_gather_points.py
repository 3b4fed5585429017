"""gather_points vs torch.gather, with the scatter-add backward."""

import pytest
import torch

from conftest import ALL_DTYPES, assert_close
from reference import gather_points_reference
from recon_fast import ops


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("C", [1, 3, 384])
def test_gather_points_matches_reference(device, dtype, C):
    points = torch.randn(2, 50, C).to(dtype)
    idx = torch.randint(-1, 50, (2, 7, 5))
    got = ops.gather_points(points.to(device), idx.to(device))
    assert got.shape == (2, 7, 5, C)
    assert torch.equal(got.cpu(), gather_points_reference(points, idx))


def test_gather_points_padding_rows_are_zero(device):
    points = torch.rand(1, 4, 3, device=device)
    got = ops.gather_points(points, torch.tensor([[-1, 2, -1]], device=device))
    assert (got[0, 0] == 0).all() and (got[0, 2] == 0).all()
    assert torch.equal(got[0, 1], points[0, 2])


def test_gather_points_gradcheck(device):
    points = torch.rand(2, 9, 4, dtype=torch.float64, device=device, requires_grad=True)
    idx = torch.tensor([[0, 3, 3, -1, 8], [1, 1, 1, 2, 0]], device=device)  # repeats accumulate
    assert torch.autograd.gradcheck(lambda p: ops.gather_points(p, idx), (points,))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gather_points_half_backward_accumulates_in_float32(device, dtype):
    # 2048 gradients of 1/2048 land on one row: exact in float32, lossy if summed in the half type.
    points = torch.zeros(1, 3, 1, dtype=dtype, device=device, requires_grad=True)
    idx = torch.zeros(1, 2048, dtype=torch.long, device=device)
    out = ops.gather_points(points, idx)
    out.backward(torch.full_like(out, 1.0 / 2048 + 1.0 / 4096))
    assert_close(points.grad[0, 0].float(), torch.tensor([1.5], device=device), dtype)


def test_gather_points_non_contiguous(device):
    points = torch.rand(2, 6, 10).transpose(1, 2)  # (2, 10, 6)
    idx = torch.randint(0, 10, (2, 4))
    got = ops.gather_points(points.to(device), idx.to(device))
    assert torch.equal(got.cpu(), gather_points_reference(points.contiguous(), idx))


@pytest.mark.parametrize("make_args,match", [
    (lambda: (torch.rand(2, 5, 3), torch.tensor([[0], [5]])), r"idx values must lie in \[-1, 4\]"),
    (lambda: (torch.rand(2, 5, 3), torch.tensor([[0], [-2]])), r"idx values must lie in \[-1, 4\]"),
    (lambda: (torch.rand(2, 5, 3), torch.tensor([[0.0]])), "idx must be an int64"),
    (lambda: (torch.rand(2, 5, 3), torch.tensor([[0]])), "batch dimension"),
    (lambda: (torch.rand(5, 3), torch.tensor([[0]])), "points must have shape"),
])
def test_gather_points_bad_input(make_args, match):
    with pytest.raises(ValueError, match=match):
        ops.gather_points(*make_args())


def test_gather_points_opcheck(device):
    points = torch.rand(2, 9, 5, device=device, requires_grad=True)
    idx = torch.randint(-1, 9, (2, 6), device=device)
    torch.library.opcheck(torch.ops.recon_fast.gather_points.default, (points, idx))


def test_gather_points_empty_batch(device):
    out = ops.gather_points(torch.rand(0, 5, 3, device=device), torch.zeros(0, 4, 2, dtype=torch.long,
                                                                        device=device))
    assert out.shape == (0, 4, 2, 3)
