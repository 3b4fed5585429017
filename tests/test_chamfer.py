"""Chamfer nearest neighbours and the Point-MAE losses vs plain-PyTorch references."""

import pytest
import torch

from conftest import ALL_DTYPES, assert_close
from reference import chamfer_l1_reference, chamfer_l2_reference, chamfer_reference
from recon_fast import ops


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("norm", [2, 1])
@pytest.mark.parametrize("N,M", [(1, 1), (32, 32), (5, 17), (1100, 1500)])
def test_chamfer_matches_reference(device, dtype, norm, N, M):
    x = torch.randn(3, N, 3, dtype=torch.float64).to(dtype)
    y = torch.randn(3, M, 3, dtype=torch.float64).to(dtype)
    got = ops.chamfer(x.to(device), y.to(device), norm=norm)
    want = chamfer_reference(x, y, norm=norm)
    assert torch.equal(got.idx_xy.cpu(), want[2]) and torch.equal(got.idx_yx.cpu(), want[3])
    assert_close(got.dist_xy.cpu(), want[0], dtype)
    assert_close(got.dist_yx.cpu(), want[1], dtype)


@pytest.mark.parametrize("N", [40, 1500])  # fused brute force and kd-tree paths
def test_chamfer_ties_go_to_lowest_index(device, N):
    x = torch.randint(0, 3, (2, N, 3)).float()
    y = torch.randint(0, 3, (2, N + 3, 3)).float()
    got = ops.chamfer(x.to(device), y.to(device))
    want = chamfer_reference(x, y)
    assert torch.equal(got.idx_xy.cpu(), want[2]) and torch.equal(got.idx_yx.cpu(), want[3])


def test_chamfer_ragged_lengths(device):
    x, y = torch.rand(4, 30, 3), torch.rand(4, 20, 3)
    xl, yl = torch.tensor([30, 5, 0, 12]), torch.tensor([20, 20, 7, 0])
    got = ops.chamfer(x.to(device), y.to(device), xl.to(device), yl.to(device))
    want = chamfer_reference(x, y, xl, yl)
    for g, w in zip(got, want):
        assert torch.equal(g.cpu(), w)
    assert (got.idx_xy[1, 5:] == -1).all() and (got.idx_xy[3] == -1).all()


def test_chamfer_l2_and_l1_match_point_mae(device):
    x, y = torch.rand(8, 32, 3), torch.rand(8, 32, 3)
    assert_close(ops.chamfer_distance(x.to(device), y.to(device), distance="squared").cpu(),
                 chamfer_l2_reference(x, y))
    assert_close(ops.chamfer_distance(x.to(device), y.to(device), distance="euclidean").cpu(),
                 chamfer_l1_reference(x, y))
    assert_close(ops.chamfer_distance(x.to(device), y.to(device)).cpu(), chamfer_l2_reference(x, y))


@pytest.mark.parametrize("norm,reference", [(2, chamfer_l2_reference), (1, chamfer_l1_reference)])
def test_chamfer_distance_norm_is_a_deprecated_alias(norm, reference):
    x, y = torch.rand(4, 16, 3), torch.rand(4, 20, 3)
    with pytest.warns(DeprecationWarning, match="distance='squared'.*distance='euclidean'"):
        got = ops.chamfer_distance(x, y, norm=norm)
    assert_close(got, reference(x, y))


def test_chamfer_distance_is_zero_for_identical_clouds_and_symmetric(device):
    x = torch.rand(2, 40, 3, device=device)
    y = torch.rand(2, 25, 3, device=device)
    assert ops.chamfer_distance(x, x[:, torch.randperm(40)]) == 0
    assert_close(ops.chamfer_distance(x, y), ops.chamfer_distance(y, x))


def test_chamfer_distance_reductions_and_lengths(device):
    x, y = torch.rand(3, 10, 3, device=device), torch.rand(3, 12, 3, device=device)
    per_cloud = ops.chamfer_distance(x, y, reduction="none")
    assert per_cloud.shape == (3,)
    assert_close(ops.chamfer_distance(x, y, reduction="sum"), per_cloud.sum())
    xl = torch.tensor([10, 4, 7], device=device)
    ragged = ops.chamfer_distance(x, y, xl, reduction="none")
    assert_close(ragged[1], ops.chamfer_distance(x[1:2, :4], y[1:2], reduction="none")[0])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_chamfer_distance_half_inputs_give_float32_loss(device, dtype):
    x, y = torch.rand(4, 32, 3), torch.rand(4, 32, 3)
    loss = ops.chamfer_distance(x.to(dtype).to(device), y.to(dtype).to(device))
    assert loss.dtype == torch.float32
    assert_close(loss.cpu(), chamfer_l2_reference(x.to(dtype).float(), y.to(dtype).float()))


@pytest.mark.parametrize("norm", [2, 1])
def test_chamfer_gradcheck(device, norm):
    x = torch.rand(2, 9, 3, dtype=torch.float64, device=device, requires_grad=True)
    y = torch.rand(2, 7, 3, dtype=torch.float64, device=device, requires_grad=True)

    def both(a, b):
        r = ops.chamfer(a, b, norm=norm)
        return r.dist_xy, r.dist_yx

    assert torch.autograd.gradcheck(both, (x, y))
    distance = {2: "squared", 1: "euclidean"}[norm]
    assert torch.autograd.gradcheck(lambda a, b: ops.chamfer_distance(a, b, distance=distance),
                                    (x, y))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_chamfer_gradients_match_reference(device, dtype):
    x, y = torch.rand(4, 32, 3).to(dtype), torch.rand(4, 40, 3).to(dtype)

    def grads(fn, dev):
        a, b = x.to(dev).requires_grad_(), y.to(dev).requires_grad_()
        fn(a, b).backward()
        return a.grad.cpu(), b.grad.cpu()

    got = grads(lambda a, b: ops.chamfer_distance(a, b), device)
    want = grads(lambda a, b: chamfer_l2_reference(a, b), "cpu")
    for g, w in zip(got, want):
        assert_close(g, w, dtype)


def test_chamfer_only_one_direction_used_in_backward(device):
    x = torch.rand(2, 10, 3, device=device, requires_grad=True)
    y = torch.rand(2, 8, 3, device=device, requires_grad=True)
    ops.chamfer(x, y).dist_xy.sum().backward()
    assert x.grad is not None and y.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("make_args,match", [
    (lambda: (torch.rand(2, 4, 3), torch.rand(3, 4, 3)), "batch size"),
    (lambda: (torch.rand(2, 4, 4), torch.rand(2, 4, 3)), "x must have shape"),
    (lambda: (torch.rand(2, 4, 3), torch.rand(2, 4, 3, dtype=torch.float64)), "dtype"),
    (lambda: (torch.rand(2, 4, 3), torch.tensor([[[float("nan")] * 3]]).expand(2, 1, 3)), "y contains NaN"),
])
def test_chamfer_bad_input(make_args, match):
    with pytest.raises(ValueError, match=match):
        ops.chamfer(*make_args())


def test_chamfer_distance_bad_arguments():
    x = torch.rand(1, 3, 3)
    with pytest.raises(ValueError, match="reduction must be"):
        ops.chamfer_distance(x, x, reduction="avg")
    with pytest.raises(ValueError, match="distance must be one of"):
        ops.chamfer_distance(x, x, distance="l1")
    with pytest.raises(ValueError, match="norm must be 1"), pytest.warns(DeprecationWarning):
        ops.chamfer_distance(x, x, norm=3)


def test_chamfer_opcheck(device):
    x = torch.rand(2, 9, 3, device=device, requires_grad=True)
    y = torch.rand(2, 13, 3, device=device, requires_grad=True)
    xl, yl = torch.tensor([9, 4], device=device), torch.tensor([13, 13], device=device)
    torch.library.opcheck(torch.ops.recon_fast.chamfer.default, (x, y, xl, yl, 2))
    torch.library.opcheck(torch.ops.recon_fast.chamfer.default, (x, y, xl, yl, 1))


def test_chamfer_under_torch_compile(device):
    x = torch.rand(4, 32, 3, device=device, requires_grad=True)
    y = torch.rand(4, 32, 3, device=device)
    compiled = torch.compile(lambda a, b: ops.chamfer_distance(a, b), fullgraph=True,
                             backend="aot_eager")
    out = compiled(x, y)
    (grad,) = torch.autograd.grad(out, x)
    (want,) = torch.autograd.grad(ops.chamfer_distance(x, y), x)
    assert_close(out.detach(), ops.chamfer_distance(x, y).detach())
    assert_close(grad, want)


def test_chamfer_backward_opcheck_with_strided_inputs(device):
    # The kernels return contiguous gradients for strided x / y: the fake kernel must say so.
    x = torch.rand(2, 3, 9, device=device).transpose(1, 2)  # (2, 9, 3), not contiguous
    y = torch.rand(2, 3, 13, device=device).transpose(1, 2)
    _, _, idx_xy, idx_yx = torch.ops.recon_fast.chamfer(x, y, torch.tensor([9, 4], device=device),
                                                        torch.tensor([13, 13], device=device), 2)
    grads = (torch.rand(2, 9, device=device), torch.rand(2, 13, device=device))
    torch.library.opcheck(torch.ops.recon_fast.chamfer_backward.default,
                          (*grads, x, y, idx_xy, idx_yx, 2))
