"""recon_fast.compat.pointnet2_ops: every public name of pointnet2_ops.pointnet2_utils, the
autograd.Function classes and grouping modules, against restatements of the original."""

import pytest
import torch

from conftest import assert_close
from peer_restatement import (group_channels, pointnet2_ball_query, pointnet2_fps,
                              pointnet2_three_nn, query_and_group)
from recon_fast.compat.pointnet2_ops import pointnet2_modules, pointnet2_utils as pu

# Every public name of erikwijmans/Pointnet2_PyTorch's pointnet2_ops/pointnet2_utils.py.
ORIGINAL_NAMES = ["FurthestPointSampling", "furthest_point_sample", "GatherOperation",
                  "gather_operation", "ThreeNN", "three_nn", "ThreeInterpolate",
                  "three_interpolate", "GroupingOperation", "grouping_operation", "BallQuery",
                  "ball_query", "QueryAndGroup", "GroupAll"]


def test_pointnet2_utils_has_every_original_name():
    missing = [name for name in ORIGINAL_NAMES if not hasattr(pu, name)]
    assert not missing
    assert sorted(pu.__all__) == sorted(ORIGINAL_NAMES)
    for name in ("build_shared_mlp", "PointnetSAModule", "PointnetSAModuleMSG",
                 "PointnetFPModule"):
        assert hasattr(pointnet2_modules, name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("N,npoint,nsample,radius", [(200, 16, 8, 0.2), (50, 7, 32, 0.4),
                                                     (33, 5, 1, 0.05)])
def test_ball_query_matches_pointnet2(device, dtype, N, npoint, nsample, radius):
    xyz = torch.rand(2, N, 3, dtype=torch.float64).to(dtype)
    new_xyz = xyz[:, :npoint] + 0.01
    got = pu.ball_query(radius, nsample, xyz.to(device), new_xyz.to(device))
    assert got.dtype == torch.int32 and got.shape == (2, npoint, nsample)
    assert torch.equal(got.cpu(), pointnet2_ball_query(radius, nsample, xyz, new_xyz))


def test_ball_query_pads_with_the_first_hit_and_empty_balls_with_zero(device):
    xyz = torch.tensor([[[5.0, 5, 5], [0.1, 0, 0], [9, 9, 9], [0, 0.1, 0]]])
    new_xyz = torch.tensor([[[0.0, 0, 0], [-7.0, -7, -7]]])
    got = pu.ball_query(0.5, 4, xyz.to(device), new_xyz.to(device))
    assert got.tolist() == [[[1, 3, 1, 1], [0, 0, 0, 0]]]
    assert torch.equal(pu.BallQuery.apply(0.5, 4, xyz.to(device), new_xyz.to(device)), got)


def test_function_classes_apply_like_the_functions(device):
    xyz = torch.rand(2, 64, 3, device=device)
    feats = torch.rand(2, 5, 64, device=device)
    idx = pu.FurthestPointSampling.apply(xyz, 8)
    assert torch.equal(idx.cpu(), pointnet2_fps(xyz.cpu(), 8).to(torch.int32))
    assert not idx.requires_grad
    assert torch.equal(pu.GatherOperation.apply(feats, idx), pu.gather_operation(feats, idx))
    group_idx = pu.ball_query(0.3, 6, xyz, xyz[:, :8])
    assert torch.equal(pu.GroupingOperation.apply(feats, group_idx),
                       group_channels(feats, group_idx))
    dist, nn_idx = pu.ThreeNN.apply(xyz[:, :10], xyz[:, 10:])
    want_d, want_i = pointnet2_three_nn(xyz[:, :10].cpu(), xyz[:, 10:].cpu())
    assert torch.equal(nn_idx.cpu(), want_i.to(torch.int32))
    assert_close(dist.cpu(), want_d)


@pytest.mark.parametrize("op", ["gather", "group"])
def test_gather_and_group_functions_backpropagate_like_torch_gather(device, op):
    feats = torch.rand(2, 4, 30, dtype=torch.float64, device=device, requires_grad=True)
    shape = (2, 9) if op == "gather" else (2, 6, 5)
    idx = torch.randint(0, 30, shape, device=device, dtype=torch.int32)
    function = pu.GatherOperation if op == "gather" else pu.GroupingOperation
    g = torch.rand((2, 4, *shape[1:]), dtype=torch.float64, device=device)
    (function.apply(feats, idx) * g).sum().backward()
    ref = feats.detach().clone().requires_grad_()
    (group_channels(ref, idx) * g).sum().backward()
    assert_close(feats.grad, ref.grad)
    torch.autograd.gradcheck(lambda f: function.apply(f, idx), (feats,))


def test_three_interpolate_gradients_and_zero_weight_grad(device):
    feats = torch.rand(2, 4, 12, dtype=torch.float64, device=device, requires_grad=True)
    idx = torch.randint(0, 12, (2, 7, 3), device=device, dtype=torch.int32)
    weight = torch.rand(2, 7, 3, dtype=torch.float64, device=device, requires_grad=True)
    g = torch.rand(2, 4, 7, dtype=torch.float64, device=device)
    (pu.three_interpolate(feats, idx, weight) * g).sum().backward()
    ref = feats.detach().clone().requires_grad_()
    want = sum(group_channels(ref, idx[..., k]) * weight.detach()[..., k][:, None, :]
               for k in range(3))
    (want * g).sum().backward()
    assert_close(feats.grad, ref.grad)
    # The original's backward returns zeros_like(weight): the grad exists and is all zeros.
    assert weight.grad is not None and torch.equal(weight.grad, torch.zeros_like(weight))
    torch.autograd.gradcheck(lambda f: pu.ThreeInterpolate.apply(f, idx, weight.detach()),
                             (feats,))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_three_interpolate_backward_in_half_types(device, dtype):
    feats = torch.rand(1, 3, 10, device=device).to(dtype).requires_grad_()
    idx = torch.randint(0, 10, (1, 4, 3), device=device)
    weight = torch.rand(1, 4, 3, device=device)
    pu.three_interpolate(feats, idx, weight).float().sum().backward()
    want = torch.zeros(1, 3, 10)
    for k in range(3):
        want.index_add_(2, idx[0, :, k].cpu(), weight[:, :, k].cpu()[:, None, :].expand(1, 3, 4))
    assert feats.grad.dtype == dtype
    assert_close(feats.grad.cpu(), want.to(dtype))


@pytest.mark.parametrize("use_xyz", [True, False])
@pytest.mark.parametrize("with_features", [True, False])
def test_query_and_group_matches_pointnet2(device, use_xyz, with_features):
    if not use_xyz and not with_features:
        pytest.skip("covered by the error test below")
    xyz = torch.rand(2, 80, 3, dtype=torch.float64, device=device, requires_grad=True)
    feats = torch.rand(2, 6, 80, dtype=torch.float64, device=device, requires_grad=True)
    new_xyz = xyz[:, :10].detach() + 0.02
    features = feats if with_features else None
    got = pu.QueryAndGroup(0.25, 12, use_xyz=use_xyz)(xyz, new_xyz, features)
    xyz2, feats2 = xyz.detach().clone().requires_grad_(), feats.detach().clone().requires_grad_()
    want = query_and_group(0.25, 12, xyz2, new_xyz, feats2 if with_features else None, use_xyz)
    assert got.shape == want.shape
    assert_close(got, want)
    g = torch.rand_like(want)
    (got * g).sum().backward()
    (want * g).sum().backward()
    if use_xyz:
        assert_close(xyz.grad, xyz2.grad)
    if with_features:
        assert_close(feats.grad, feats2.grad)


def test_query_and_group_without_anything_to_group_raises():
    xyz = torch.rand(1, 10, 3)
    with pytest.raises(ValueError, match="needs features when use_xyz is False"):
        pu.QueryAndGroup(0.2, 4, use_xyz=False)(xyz, xyz[:, :2], None)


@pytest.mark.parametrize("use_xyz", [True, False])
def test_group_all(device, use_xyz):
    xyz = torch.rand(2, 20, 3, device=device)
    feats = torch.rand(2, 5, 20, device=device)
    out = pu.GroupAll(use_xyz)(xyz, None, feats)
    want = torch.cat([xyz.transpose(1, 2), feats], 1) if use_xyz else feats
    assert torch.equal(out, want[:, :, None, :])
    assert torch.equal(pu.GroupAll(use_xyz)(xyz, None, None), xyz.transpose(1, 2)[:, :, None])


def test_ball_query_errors_name_the_argument():
    xyz = torch.rand(1, 10, 3)
    with pytest.raises(ValueError, match="radius must be finite and >= 0"):
        pu.ball_query(-1.0, 4, xyz, xyz)
    with pytest.raises(ValueError, match="nsample must be in"):
        pu.ball_query(0.1, 0, xyz, xyz)
    with pytest.raises(ValueError, match="new_xyz must have shape"):
        pu.ball_query(0.1, 4, xyz, xyz[..., :2])
