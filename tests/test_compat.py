"""recon_fast.compat shims vs plain-PyTorch restatements of the originals' semantics.

The restatements below are written from pointnet2_ops (erikwijmans/Pointnet2_PyTorch),
pytorch3d 0.7.9 (ops/knn.py, ops/sample_farthest_points.py, loss/chamfer.py) and Point-MAE's
extensions/chamfer_dist: full distance matrices, explicit loops and torch.gather, never our
kernels.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import ALL_DTYPES, assert_close
from reference import acc_dtype, pairwise_dist
from recon_fast.compat import chamfer_dist, pointnet2_utils
from recon_fast.compat import pytorch3d_ops as p3d


# ============================================================================================
# Restatements of the originals
# ============================================================================================

def pointnet2_fps_restated(xyz, npoint):
    """pointnet2's furthest_point_sampling kernel, one cloud and one step at a time: start at 0,
    running minimum from 1e10, points with |p|^2 <= 1e-3 (compared in double) skipped, the
    first strictly larger distance wins, index 0 when nothing is eligible."""
    pts_all = xyz.detach().to(acc_dtype(xyz.dtype)).cpu()
    out = torch.zeros(xyz.shape[0], npoint, dtype=torch.int32)
    for b, pts in enumerate(pts_all):
        sq = pts * pts
        eligible = ((sq[:, 0] + sq[:, 1]) + sq[:, 2]).double() > 1e-3
        temp = torch.full((pts.shape[0],), 1e10, dtype=pts.dtype)
        old = 0
        for j in range(1, npoint):
            d = pairwise_dist(pts[old][None, None], pts[None])[0, 0]
            temp = torch.where(eligible, torch.minimum(d, temp), temp)
            old = int(torch.where(eligible, temp, -1.0).argmax()) if eligible.any() else 0
            out[b, j] = old
    return out


def gather_channels_restated(features, idx):
    """features (B, C, N), idx (B, ...) -> (B, C, ...) by torch.gather."""
    B, C = features.shape[:2]
    flat = idx.long().reshape(B, 1, -1).expand(B, C, -1)
    return features.gather(2, flat).reshape(B, C, *idx.shape[1:])


def three_nn_restated(unknown, known):
    dtype = acc_dtype(unknown.dtype)
    d = pairwise_dist(unknown.to(dtype), known.to(dtype))  # (B, n, m)
    sq, idx = torch.sort(d, dim=2, stable=True)
    m = known.shape[1]
    dist, idx = sq[..., :3].sqrt(), idx[..., :3]
    if m < 3:
        dist = torch.cat([dist, torch.full((*dist.shape[:2], 3 - m), float("inf"))], 2)
        idx = torch.cat([idx, torch.zeros((*idx.shape[:2], 3 - m), dtype=idx.dtype)], 2)
    return dist.to(unknown.dtype), idx.to(torch.int32)


def three_interpolate_restated(features, idx, weight):
    dtype = acc_dtype(features.dtype)
    out = 0
    for k in range(3):
        out = out + gather_channels_restated(features.to(dtype), idx[..., k]) * \
            weight[..., k].to(dtype)[:, None, :]
    return out.to(features.dtype)


def p3d_knn_restated(p1, p2, lengths1=None, lengths2=None, K=1, norm=2):
    """pytorch3d knn_points: sorted neighbours among the first lengths2[n] points of p2; slots
    with k >= lengths2[n] and rows with i >= lengths1[n] hold distance 0 and index 0."""
    N, P1, P2 = p1.shape[0], p1.shape[1], p2.shape[1]
    l1 = torch.full((N,), P1) if lengths1 is None else lengths1.cpu()
    l2 = torch.full((N,), P2) if lengths2 is None else lengths2.cpu()
    d = pairwise_dist(p1, p2, norm)  # (N, P1, P2)
    invalid = torch.arange(P2)[None, None, :] >= l2[:, None, None]
    _, order = torch.sort(d.detach().masked_fill(invalid, float("inf")), dim=2, stable=True)
    order = order[..., :K]
    dists = d.gather(2, order)
    if K > P2:
        dists = torch.cat([dists, d.new_zeros(N, P1, K - P2)], 2)
        order = torch.cat([order, order.new_zeros(N, P1, K - P2)], 2)
    pad = (torch.arange(K)[None, None, :] >= l2[:, None, None]) | \
        (torch.arange(P1)[None, :, None] >= l1[:, None, None])
    return dists.masked_fill(pad, 0), order.masked_fill(pad, 0)


def p3d_knn_gather_restated(x, idx, lengths=None):
    N, M, U = x.shape
    K = idx.shape[2]
    out = x[:, :, None].expand(-1, -1, K, -1).gather(1, idx[..., None].expand(-1, -1, -1, U))
    lengths = torch.full((N,), M) if lengths is None else lengths.cpu()
    beyond = lengths[:, None] <= torch.arange(K)[None]  # (N, K)
    return out.masked_fill(beyond[:, None, :, None], 0)


def p3d_fps_restated(points, lengths, K, start):
    """pytorch3d's farthest point sampling: slot 0 is the start index, then min(K[n], len[n])
    greedy picks (first maximum), -1 after; points gathered with zeros for -1."""
    N = points.shape[0]
    max_k = int(K.max()) if N else 0
    idx = torch.full((N, max_k), -1, dtype=torch.int64)
    pts_all = points.detach().to(acc_dtype(points.dtype)).cpu()
    for n in range(N):
        L = int(lengths[n])
        if max_k:
            idx[n, 0] = int(start[n])
        last = int(start[n])
        closest = torch.full((L,), float("inf"), dtype=pts_all.dtype)
        for k in range(1, min(L, int(K[n]))):
            d = ((pts_all[n, :L] - pts_all[n, last]) ** 2).sum(1)
            closest = torch.minimum(closest, d)
            last = int(torch.argmax(closest))
            idx[n, k] = last
    safe = idx.clamp_min(0)[..., None].expand(-1, -1, points.shape[2])
    selected = points.gather(1, safe.to(points.device)).masked_fill((idx < 0)[..., None], 0)
    return selected, idx


def p3d_chamfer_restated(x, y, x_lengths=None, y_lengths=None, x_normals=None, y_normals=None,
                         weights=None, batch_reduction="mean", point_reduction="mean", norm=2,
                         single_directional=False, abs_cosine=True):
    """pytorch3d 0.7.9 chamfer_distance on tensors, from its documented reductions."""
    N = x.shape[0]
    x_lengths = torch.full((N,), x.shape[1]) if x_lengths is None else x_lengths
    y_lengths = torch.full((N,), y.shape[1]) if y_lengths is None else y_lengths
    with_normals = x_normals is not None and y_normals is not None

    def direction(a, b, la, lb, na, nb):
        if weights is not None and weights.sum() == 0:
            zero = (a.sum((1, 2)) * weights.view(N, 1)) * 0.0
            return zero, zero
        dists, idx = p3d_knn_restated(a, b, la, lb, K=1, norm=norm)
        pad = torch.arange(a.shape[1])[None] >= la[:, None]
        cham = dists[..., 0].masked_fill(pad, 0)
        cham_n = None
        if with_normals:
            near = p3d_knn_gather_restated(nb, idx, lb)[..., 0, :]
            cos = F.cosine_similarity(na, near, dim=2, eps=1e-6)
            cham_n = (1 - (cos.abs() if abs_cosine else cos)).masked_fill(pad, 0)
        if weights is not None:
            cham = cham * weights.view(N, 1)
            cham_n = None if cham_n is None else cham_n * weights.view(N, 1)
        if point_reduction == "max":
            return cham.max(1).values, None
        if point_reduction is None:
            return cham, cham_n
        div = la.clamp(min=1) if point_reduction == "mean" else 1
        return cham.sum(1) / div, (None if cham_n is None else cham_n.sum(1) / div)

    cx, nx = direction(x, y, x_lengths, y_lengths, x_normals, y_normals)
    if single_directional:
        loss, loss_n = cx, nx
    else:
        cy, ny = direction(y, x, y_lengths, x_lengths, y_normals, x_normals)
        if point_reduction == "max":
            loss, loss_n = torch.maximum(cx, cy), None
        elif point_reduction is None:
            loss, loss_n = (cx, cy), (None if nx is None else (nx, ny))
        else:
            loss, loss_n = cx + cy, (None if nx is None else nx + ny)
    if batch_reduction is None:
        return loss, loss_n
    loss, loss_n = loss.sum(), (None if loss_n is None else loss_n.sum())
    if batch_reduction == "mean":
        if weights is None:
            div = max(N, 1)
        else:
            div = 1 if weights.sum() == 0 else weights.sum()
        loss, loss_n = loss / div, (None if loss_n is None else loss_n / div)
    return loss, loss_n


def point_mae_dists_restated(xyz1, xyz2):
    """Point-MAE's chamfer.forward: squared distance to the nearest point of the other cloud."""
    d = pairwise_dist(xyz1.to(acc_dtype(xyz1.dtype)), xyz2.to(acc_dtype(xyz2.dtype)))
    return d.min(2).values, d.min(1).values


# ============================================================================================
# pointnet2_ops.pointnet2_utils
# ============================================================================================

def test_pointnet2_utils_functions_are_callable():
    # The full list of original names is checked in test_compat_pointnet2.py.
    names = {"furthest_point_sample", "gather_operation", "grouping_operation", "three_nn",
             "three_interpolate", "ball_query"}
    assert names <= set(pointnet2_utils.__all__)
    assert all(callable(getattr(pointnet2_utils, n)) for n in names)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B,N,npoint", [(1, 1, 1), (2, 64, 5), (3, 1000, 17), (1, 7, 7)])
def test_furthest_point_sample_matches_pointnet2(device, dtype, B, N, npoint):
    xyz = torch.randn(B, N, 3, dtype=dtype)
    xyz[:, 1::5] *= 0.01  # plant points inside |p|^2 <= 1e-3 that must never be picked
    got = pointnet2_utils.furthest_point_sample(xyz.to(device), npoint)
    assert got.dtype == torch.int32 and got.shape == (B, npoint) and not got.requires_grad
    assert torch.equal(got.cpu(), pointnet2_fps_restated(xyz, npoint))


def test_furthest_point_sample_skips_the_origin_and_repeats_zero_when_exhausted(device):
    # start (5,0,0); (0,0,0) and (0.02,0,0) lie within |p|^2 <= 1e-3. Without the rule the third
    # pick would be index 2 (distance 1.0404 beats 1); with it, index 3. Two further samples
    # find no eligible point with a positive distance and repeat index 0, as pointnet2 does.
    xyz = torch.tensor([[[5.0, 0, 0], [0, 0, 0], [0.02, 0, 0], [4, 0, 0], [-1, 0, 0]]])
    got = pointnet2_utils.furthest_point_sample(xyz.to(device), 5)
    assert got.tolist() == [[0, 4, 3, 0, 0]]


def test_furthest_point_sample_from_the_origin_repeats_lowest_eligible_point(device):
    # Start at the origin (always taken); (0.01,0,0) is never eligible; point 4 duplicates
    # point 2, so after 3 and 2 every eligible distance is 0 and the lowest eligible, 2, repeats.
    xyz = torch.tensor([[[0.0, 0, 0], [0.01, 0, 0], [1, 0, 0], [0, 2, 0], [1, 0, 0]]])
    got = pointnet2_utils.furthest_point_sample(xyz.to(device), 5)
    assert got.tolist() == [[0, 3, 2, 2, 2]]


def test_furthest_point_sample_only_ineligible_points_gives_zeros(device):
    xyz = torch.rand(2, 10, 3) * 0.01
    got = pointnet2_utils.furthest_point_sample(xyz.to(device), 4)
    assert torch.equal(got.cpu(), torch.zeros(2, 4, dtype=torch.int32))


def test_furthest_point_sample_threshold_is_compared_in_double(device):
    # |p|^2 of point 2 rounds (float32) to exactly float32(1e-3) = 0.00100000005 > 1e-3, so
    # pointnet2 may pick it, and it is the farthest from (5,0,0).
    xyz = torch.tensor([[[5.0, 0, 0], [0.5, 0, 0], [0.0316166989505291, 0.00062, 0]]])
    assert float((xyz[0, 2] ** 2).sum()) == float(np.float32(1e-3))
    assert pointnet2_utils.furthest_point_sample(xyz.to(device), 3).tolist() == [[0, 2, 1]]


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_gather_operation_matches_pointnet2(device, dtype, index_dtype):
    features = torch.randn(3, 40, 5, dtype=dtype).transpose(1, 2)  # (B, C=5, N=40), strided
    idx = torch.randint(0, 40, (3, 11), dtype=index_dtype)
    got = pointnet2_utils.gather_operation(features.to(device), idx.to(device))
    assert got.shape == (3, 5, 11) and got.dtype == dtype and got.is_contiguous()
    assert torch.equal(got.cpu(), gather_channels_restated(features, idx))


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_grouping_operation_matches_pointnet2(device, dtype):
    features = torch.randn(2, 6, 33, dtype=dtype)
    idx = torch.randint(0, 33, (2, 7, 4), dtype=torch.int32)
    got = pointnet2_utils.grouping_operation(features.to(device), idx.to(device))
    assert got.shape == (2, 6, 7, 4) and got.dtype == dtype and got.is_contiguous()
    assert torch.equal(got.cpu(), gather_channels_restated(features, idx))


@pytest.mark.parametrize("op,idx_shape", [("gather_operation", (2, 9)),
                                          ("grouping_operation", (2, 5, 3))])
def test_gather_and_grouping_gradients(device, op, idx_shape):
    fn = getattr(pointnet2_utils, op)
    idx = torch.randint(0, 12, idx_shape, dtype=torch.int32)  # repeats: scatter-add backward
    features = torch.randn(2, 4, 12, dtype=torch.float64)
    upstream = torch.randn(2, 4, *idx_shape[1:], dtype=torch.float64)
    a = features.clone().to(device).requires_grad_()
    (fn(a, idx.to(device)) * upstream.to(device)).sum().backward()
    b = features.clone().requires_grad_()
    (gather_channels_restated(b, idx) * upstream).sum().backward()
    assert_close(a.grad.cpu(), b.grad)
    assert torch.autograd.gradcheck(lambda f: fn(f, idx.to(device)),
                                    (features.to(device).requires_grad_(),), fast_mode=True)


def test_gather_operation_index_minus_one_gives_zeros(device):
    features = torch.randn(1, 3, 5, device=device)
    idx = torch.tensor([[4, -1, 0]], dtype=torch.int32, device=device)
    got = pointnet2_utils.gather_operation(features, idx)
    assert torch.equal(got[:, :, 1].cpu(), torch.zeros(1, 3))
    assert torch.equal(got[:, :, 0], features[:, :, 4])


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("n,m", [(1, 3), (50, 20), (30, 600)])
def test_three_nn_matches_pointnet2(device, dtype, n, m):
    unknown = torch.randn(2, n, 3, dtype=torch.float64).to(dtype)
    known = torch.randn(2, m, 3, dtype=torch.float64).to(dtype)
    dist, idx = pointnet2_utils.three_nn(unknown.to(device).requires_grad_(),
                                         known.to(device).requires_grad_())
    want_dist, want_idx = three_nn_restated(unknown, known)
    assert idx.dtype == torch.int32 and dist.dtype == dtype and dist.shape == (2, n, 3)
    assert not dist.requires_grad and not idx.requires_grad
    assert torch.equal(idx.cpu(), want_idx)
    assert_close(dist.cpu(), want_dist, dtype)


def test_three_nn_ties_go_to_lowest_index(device):
    known = torch.randint(0, 2, (2, 40, 3)).float()
    unknown = torch.randint(0, 2, (2, 15, 3)).float()
    _, idx = pointnet2_utils.three_nn(unknown.to(device), known.to(device))
    assert torch.equal(idx.cpu(), three_nn_restated(unknown, known)[1])


@pytest.mark.parametrize("m", [1, 2])
def test_three_nn_with_fewer_than_three_known_points(device, m):
    unknown, known = torch.randn(2, 6, 3), torch.randn(2, m, 3)
    dist, idx = pointnet2_utils.three_nn(unknown.to(device), known.to(device))
    want_dist, want_idx = three_nn_restated(unknown, known)
    assert torch.equal(idx.cpu(), want_idx)
    assert torch.isinf(dist[..., m:]).all()
    assert_close(dist.cpu(), want_dist)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_three_interpolate_matches_pointnet2(device, dtype):
    features = torch.randn(2, 30, 7, dtype=torch.float64).to(dtype).transpose(1, 2)  # (2, 7, 30)
    idx = torch.randint(0, 30, (2, 45, 3), dtype=torch.int32)
    weight = torch.rand(2, 45, 3, dtype=dtype)
    got = pointnet2_utils.three_interpolate(features.to(device), idx.to(device), weight.to(device))
    assert got.shape == (2, 7, 45) and got.dtype == dtype and got.is_contiguous()
    assert_close(got.cpu(), three_interpolate_restated(features, idx, weight), dtype)


def test_three_interpolate_gradient_reaches_features_only(device):
    features = torch.randn(2, 4, 10, dtype=torch.float64)
    idx = torch.randint(0, 10, (2, 13, 3), dtype=torch.int32)
    weight = torch.rand(2, 13, 3, dtype=torch.float64)
    upstream = torch.randn(2, 4, 13, dtype=torch.float64)
    a = features.clone().to(device).requires_grad_()
    w = weight.clone().to(device).requires_grad_()
    (pointnet2_utils.three_interpolate(a, idx.to(device), w) * upstream.to(device)).sum().backward()
    b = features.clone().requires_grad_()
    (three_interpolate_restated(b, idx, weight) * upstream).sum().backward()
    assert_close(a.grad.cpu(), b.grad)
    assert torch.equal(w.grad, torch.zeros_like(w))  # pointnet2's backward: zeros for weight
    assert torch.autograd.gradcheck(
        lambda f: pointnet2_utils.three_interpolate(f, idx.to(device), weight.to(device)),
        (features.to(device).requires_grad_(),), fast_mode=True)


def test_pointnet2_feature_propagation_pipeline(device):
    """three_nn -> inverse distance weights -> three_interpolate, as PointNet++'s FP layer."""
    unknown, known = torch.randn(2, 64, 3), torch.randn(2, 16, 3)
    feats = torch.randn(2, 8, 16)
    dist, idx = pointnet2_utils.three_nn(unknown.to(device), known.to(device))
    recip = 1.0 / (dist + 1e-8)
    weight = recip / recip.sum(dim=2, keepdim=True)
    got = pointnet2_utils.three_interpolate(feats.to(device), idx, weight)
    d, i = three_nn_restated(unknown, known)
    r = 1.0 / (d + 1e-8)
    assert_close(got.cpu(), three_interpolate_restated(feats, i, r / r.sum(2, keepdim=True)))


def test_pointnet2_errors_name_the_argument():
    xyz = torch.rand(2, 10, 3)
    features = torch.rand(2, 4, 10)
    i32 = (lambda *shape: torch.zeros(shape, dtype=torch.int32))
    gather, group = pointnet2_utils.gather_operation, pointnet2_utils.grouping_operation
    interpolate = pointnet2_utils.three_interpolate
    cases = [
        (lambda: pointnet2_utils.furthest_point_sample(xyz, 11), "npoint"),
        (lambda: pointnet2_utils.furthest_point_sample(xyz[..., :2], 3), "xyz"),
        (lambda: gather(features[0], i32(2, 3)), "features"),
        (lambda: gather(features.long(), i32(2, 3)), "features"),
        (lambda: gather(features, torch.zeros(2, 3)), "idx"),
        (lambda: gather(features, i32(3, 3)), "idx"),
        (lambda: gather(features, i32(2, 3) + 10), "idx"),
        (lambda: group(features, i32(2, 3)), "idx"),
        (lambda: pointnet2_utils.three_nn(xyz, xyz[:, :0]), "known"),
        (lambda: pointnet2_utils.three_nn(xyz, xyz.double()), "dtype"),
        (lambda: interpolate(features, i32(2, 5, 3), torch.rand(2, 5, 2)), "weight"),
        (lambda: interpolate(features, i32(2, 5, 2), torch.rand(2, 5, 2)), "idx"),
    ]
    for call, word in cases:
        with pytest.raises(ValueError, match=word):
            call()


# ============================================================================================
# pytorch3d.ops: knn_points, knn_gather
# ============================================================================================

@pytest.mark.parametrize("norm", [2, 1])
@pytest.mark.parametrize("K", [1, 4, 12])  # 12 exceeds P2 = 9
@pytest.mark.parametrize("ragged", [False, True])
def test_knn_points_matches_pytorch3d(device, norm, K, ragged):
    p1, p2 = torch.randn(3, 20, 3), torch.randn(3, 9, 3)
    l1 = torch.tensor([20, 7, 0]) if ragged else None
    l2 = torch.tensor([9, 3, 5]) if ragged else None
    to = (lambda t: None if t is None else t.to(device))
    got = p3d.knn_points(p1.to(device), p2.to(device), to(l1), to(l2), norm=norm, K=K,
                         return_nn=True)
    want_d, want_i = p3d_knn_restated(p1, p2, l1, l2, K, norm)
    assert type(got).__name__ == "KNN" and got._fields == ("dists", "idx", "knn")
    assert got.idx.dtype == torch.int64 and got.dists.shape == (3, 20, K)
    assert torch.equal(got.idx.cpu(), want_i)
    assert_close(got.dists.cpu(), want_d)
    assert torch.equal(got.knn.cpu(), p3d_knn_gather_restated(p2, want_i, l2))


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_knn_points_dtypes_and_defaults(device, dtype):
    p1 = torch.randn(2, 3, 25, dtype=torch.float64).to(dtype).transpose(1, 2)  # strided
    p2 = torch.randn(2, 40, 3, dtype=torch.float64).to(dtype)
    got = p3d.knn_points(p1.to(device), p2.to(device))  # K=1, norm=2, no nn
    want_d, want_i = p3d_knn_restated(p1.to(acc_dtype(dtype)), p2.to(acc_dtype(dtype)))
    assert got.knn is None and got.dists.dtype == dtype
    assert torch.equal(got.idx.cpu(), want_i)
    assert_close(got.dists.cpu(), want_d.to(dtype), dtype)


@pytest.mark.parametrize("norm", [2, 1])
def test_knn_points_gradients(device, norm):
    p1 = torch.randn(2, 12, 3, dtype=torch.float64)
    p2 = torch.randn(2, 8, 3, dtype=torch.float64)
    l1, l2 = torch.tensor([12, 5]), torch.tensor([8, 3])
    upstream = torch.randn(2, 12, 10, dtype=torch.float64)

    def grads(fn, dev):
        a, b = p1.clone().to(dev).requires_grad_(), p2.clone().to(dev).requires_grad_()
        (fn(a, b) * upstream.to(dev)).sum().backward()
        return a.grad.cpu(), b.grad.cpu()

    got = grads(lambda a, b: p3d.knn_points(a, b, l1.to(device), l2.to(device), norm=norm,
                                            K=10).dists, device)
    want = grads(lambda a, b: p3d_knn_restated(a, b, l1, l2, K=10, norm=norm)[0], "cpu")
    for g, w in zip(got, want):
        assert_close(g, w)
    assert torch.autograd.gradcheck(
        lambda a, b: p3d.knn_points(a, b, l1.to(device), l2.to(device), norm=norm, K=10).dists,
        (p1.to(device).requires_grad_(), p2.to(device).requires_grad_()), fast_mode=True)


def test_knn_points_with_empty_candidate_clouds(device):
    p1 = torch.randn(2, 5, 3, device=device, requires_grad=True)
    got = p3d.knn_points(p1, torch.zeros(2, 0, 3, device=device), K=3, return_nn=True)
    assert torch.equal(got.dists.cpu(), torch.zeros(2, 5, 3))
    assert torch.equal(got.idx.cpu(), torch.zeros(2, 5, 3, dtype=torch.int64))
    assert got.knn.shape == (2, 5, 3, 3) and not got.knn.any()
    got.dists.sum().backward()
    assert torch.equal(p1.grad.cpu(), torch.zeros(2, 5, 3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_knn_gather_matches_pytorch3d(device, dtype):
    x = torch.randn(3, 10, 5).to(dtype)  # features of width U = 5
    idx = torch.randint(0, 10, (3, 7, 6))
    lengths = torch.tensor([10, 4, 2])
    upstream = torch.randn(3, 7, 6, 5).to(dtype)
    a = x.clone().to(device).requires_grad_()
    got = p3d.knn_gather(a, idx.to(device), lengths.to(device))
    (got * upstream.to(device)).float().sum().backward()
    b = x.clone().requires_grad_()
    want = p3d_knn_gather_restated(b, idx, lengths)
    (want * upstream).float().sum().backward()
    assert got.dtype == dtype and torch.equal(got.cpu(), want)
    assert_close(a.grad.cpu(), b.grad, dtype)
    assert torch.equal(p3d.knn_gather(x.to(device), idx.to(device)).cpu(),
                       p3d_knn_gather_restated(x, idx))


def test_knn_points_and_gather_errors():
    p1, p2 = torch.rand(2, 5, 3), torch.rand(2, 6, 3)
    cases = [
        (lambda: p3d.knn_points(p1, p2[:1]), "batch dimension"),
        (lambda: p3d.knn_points(p1, p2[..., :2]), "point dimension"),
        (lambda: p3d.knn_points(p1, p2, norm=3), "norm"),
        (lambda: p3d.knn_points(p1, p2, K=0), "K"),
        (lambda: p3d.knn_points(p1, p2, version=7), "version"),
        (lambda: p3d.knn_points(p1, p2, lengths2=torch.tensor([6])), "lengths2"),
        (lambda: p3d.knn_points(p1, p2, lengths2=torch.tensor([7, 6])), "lengths2"),
        (lambda: p3d.knn_points(p1, p2.double()), "dtype"),
        (lambda: p3d.knn_points(p1[0], p2), "p1"),
        (lambda: p3d.knn_gather(p2, torch.zeros(3, 5, 1, dtype=torch.int64)), "batch dimension"),
        (lambda: p3d.knn_gather(p2, torch.zeros(2, 5, dtype=torch.int64)), "idx"),
        (lambda: p3d.knn_gather(p2, torch.full((2, 5, 1), 6)), "idx"),
    ]
    for call, word in cases:
        with pytest.raises(ValueError, match=word):
            call()


# ============================================================================================
# pytorch3d.ops.sample_farthest_points
# ============================================================================================

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("K,lengths", [
    (5, None),
    (30, None),                       # K > P: padded with -1
    (6, [20, 3, 0]),                  # ragged, one empty cloud (slot 0 still holds the start)
    ([4, 0, 9], [20, 7, 10]),         # per-cloud K as a list, one K of 0
    (torch.tensor([1, 20, 2]), None),  # per-cloud K as a tensor
])
def test_sample_farthest_points_matches_pytorch3d(device, dtype, K, lengths):
    points = torch.randn(3, 20, 3, dtype=torch.float64).to(dtype)
    lengths_t = None if lengths is None else torch.tensor(lengths)
    K_arg = K.to(device) if isinstance(K, torch.Tensor) else K
    got_pts, got_idx = p3d.sample_farthest_points(
        points.to(device), None if lengths_t is None else lengths_t.to(device), K_arg)
    K_t = torch.as_tensor(K).expand(3) if isinstance(K, int) else torch.as_tensor(K)
    L = torch.full((3,), 20) if lengths_t is None else lengths_t
    want_pts, want_idx = p3d_fps_restated(points, L, K_t, torch.zeros(3, dtype=torch.int64))
    assert got_idx.dtype == torch.int64 and got_pts.dtype == dtype
    assert torch.equal(got_idx.cpu(), want_idx)
    assert torch.equal(got_pts.cpu(), want_pts)


@pytest.mark.parametrize("ragged", [False, True])
def test_sample_farthest_points_random_start(device, ragged):
    points = torch.randn(4, 50, 3)
    lengths = torch.tensor([50, 10, 1, 33]) if ragged else None
    L = torch.full((4,), 50) if lengths is None else lengths
    starts = []
    for seed in range(5):
        torch.manual_seed(seed)
        _, got = p3d.sample_farthest_points(points.to(device), None if lengths is None
                                            else lengths.to(device), K=8, random_start_point=True)
        # pytorch3d draws the start like this, from the same generator
        torch.manual_seed(seed)
        if lengths is None:
            start = torch.randint(high=50, size=(4,), device=device)
        else:
            start = (L.to(device) * torch.rand(L.size(), device=device)).to(torch.int64)
        assert torch.equal(got.cpu(), p3d_fps_restated(points, L, torch.full((4,), 8),
                                                       start.cpu())[1])
        assert ((got[:, 0].cpu() >= 0) & (got[:, 0].cpu() < L)).all()
        starts.append(got[:, 0].cpu())
    assert len({tuple(s.tolist()) for s in starts}) > 1  # the start really varies


def test_sample_farthest_points_gradient_and_default_K(device):
    points = torch.randn(2, 80, 3, dtype=torch.float64)
    a = points.clone().to(device).requires_grad_()
    selected, idx = p3d.sample_farthest_points(a, lengths=torch.tensor([80, 30], device=device))
    assert selected.shape == (2, 50, 3) and (idx[1, 30:] == -1).all()  # K defaults to 50
    upstream = torch.randn(2, 50, 3, dtype=torch.float64)
    (selected * upstream.to(device)).sum().backward()
    b = points.clone().requires_grad_()
    want, _ = p3d_fps_restated(b, torch.tensor([80, 30]), torch.tensor([50, 50]),
                               torch.zeros(2, dtype=torch.int64))
    (want * upstream).sum().backward()
    assert_close(a.grad.cpu(), b.grad)


def test_sample_farthest_points_errors():
    points = torch.rand(2, 10, 3)
    cases = [
        (lambda: p3d.sample_farthest_points(points, lengths=torch.tensor([10])), "lengths"),
        (lambda: p3d.sample_farthest_points(points, lengths=torch.tensor([11, 3])), "lengths"),
        (lambda: p3d.sample_farthest_points(points, K=[3, 4, 5]), "K"),
        (lambda: p3d.sample_farthest_points(points, K=torch.tensor([3])), "K"),
        (lambda: p3d.sample_farthest_points(points, K=-1), "K"),
        (lambda: p3d.sample_farthest_points(points, K=[2, -1]), "K"),
        (lambda: p3d.sample_farthest_points(points, K=2.5), "K"),
        (lambda: p3d.sample_farthest_points(points[0], K=3), "points"),
        (lambda: p3d.sample_farthest_points(points[:, :0], K=3), "P = 0"),
    ]
    for call, word in cases:
        with pytest.raises(ValueError, match=word):
            call()


# ============================================================================================
# pytorch3d.loss.chamfer_distance
# ============================================================================================

REDUCTIONS = [(b, p) for b in ("mean", "sum", None) for p in ("mean", "sum", "max", None)
              if not (p is None and b is not None)]


def _assert_same_structure(got, want, dtype=None):
    if want is None:
        assert got is None
    elif isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want)
        for g, w in zip(got, want):
            _assert_same_structure(g, w, dtype)
    else:
        assert isinstance(got, torch.Tensor) and got.shape == want.shape
        assert_close(got.cpu(), want, dtype)


def _chamfer_inputs(with_lengths):
    x, y = torch.randn(3, 14, 3, dtype=torch.float64), torch.randn(3, 9, 3, dtype=torch.float64)
    xn, yn = torch.randn(3, 14, 3, dtype=torch.float64), torch.randn(3, 9, 3, dtype=torch.float64)
    lengths = (torch.tensor([14, 6, 1]), torch.tensor([9, 0, 2])) if with_lengths else (None, None)
    return x, y, xn, yn, lengths


@pytest.mark.parametrize("batch_reduction,point_reduction", REDUCTIONS)
@pytest.mark.parametrize("norm", [2, 1])
@pytest.mark.parametrize("single_directional", [False, True])
@pytest.mark.parametrize("extra", ["plain", "lengths", "all"])  # "all": lengths, normals, weights
def test_chamfer_distance_matches_pytorch3d(device, batch_reduction, point_reduction, norm,
                                            single_directional, extra):
    with_normals = extra == "all"
    if with_normals and point_reduction == "max":
        pytest.skip("pytorch3d rejects normals with point_reduction='max' (tested below)")
    x, y, xn, yn, (xl, yl) = _chamfer_inputs(extra != "plain")
    weights = torch.tensor([0.5, 2.0, 0.0], dtype=torch.float64) if extra == "all" else None
    leaves = [x, y] + ([xn, yn] if with_normals else [])
    leaves += [weights] if weights is not None else []

    def run(fn, dev, abs_cosine):
        args = [t.clone().to(dev).requires_grad_() for t in leaves]
        a, b = args[0], args[1]
        an, bn = (args[2], args[3]) if with_normals else (None, None)
        w = args[-1] if weights is not None else None
        to = (lambda t: None if t is None else t.to(dev))
        loss, loss_n = fn(a, b, to(xl), to(yl), an, bn, w, batch_reduction, point_reduction, norm,
                          single_directional, abs_cosine)
        flat = [t for t in (loss if isinstance(loss, tuple) else (loss,))]
        if loss_n is not None:
            flat += list(loss_n) if isinstance(loss_n, tuple) else [loss_n]
        sum(t.sin().sum() for t in flat).backward()
        return loss, loss_n, [t.grad.cpu() for t in args]

    for abs_cosine in ([True, False] if with_normals else [True]):
        got = run(p3d.chamfer_distance, device, abs_cosine)
        want = run(p3d_chamfer_restated, "cpu", abs_cosine)
        _assert_same_structure(got[0], want[0])
        _assert_same_structure(got[1], want[1])
        for g, w in zip(got[2], want[2]):
            assert_close(g, w)


def test_chamfer_distance_defaults_and_float32(device):
    x, y = torch.rand(4, 100, 3), torch.rand(4, 70, 3)
    loss, loss_n = p3d.chamfer_distance(x.to(device), y.to(device))
    want, _ = p3d_chamfer_restated(x, y)
    assert loss_n is None and loss.dtype == torch.float32 and loss.dim() == 0
    assert_close(loss.cpu(), want)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_chamfer_distance_half_inputs_are_computed_in_float32(device, dtype):
    x, y = torch.rand(2, 40, 3).to(dtype), torch.rand(2, 30, 3).to(dtype)
    loss, _ = p3d.chamfer_distance(x.to(device), y.to(device), norm=1)
    want, _ = p3d_chamfer_restated(x.float(), y.float(), norm=1)
    assert loss.dtype == torch.float32
    assert_close(loss.cpu(), want)


@pytest.mark.parametrize("point_reduction", ["mean", "max", None])
@pytest.mark.parametrize("batch_reduction", ["mean", None])
def test_chamfer_distance_all_zero_weights_shapes(device, point_reduction, batch_reduction):
    if point_reduction is None and batch_reduction is not None:
        pytest.skip("invalid combination")
    x = torch.rand(3, 5, 3, device=device, requires_grad=True)
    y = torch.rand(3, 4, 3, device=device)
    weights = torch.zeros(3, device=device)
    loss, loss_n = p3d.chamfer_distance(x, y, weights=weights, batch_reduction=batch_reduction,
                                        point_reduction=point_reduction)
    want, want_n = p3d_chamfer_restated(x.detach().cpu(), y.cpu(), weights=weights.cpu(),
                                        batch_reduction=batch_reduction,
                                        point_reduction=point_reduction)
    _assert_same_structure(loss, want)
    _assert_same_structure(loss_n, want_n)
    expected_shape = () if batch_reduction else (3, 3)  # pytorch3d's (N, N) zeros
    first = loss[0] if isinstance(loss, tuple) else loss
    assert first.shape == expected_shape and not first.any()
    if point_reduction == "mean":
        assert loss_n is not None  # zeros, not None, as pytorch3d returns


def test_chamfer_distance_accepts_pointclouds_like_objects(device):
    class Clouds:
        def __init__(self, points, lengths, normals):
            self._p, self._l, self._n = points, lengths, normals

        def points_padded(self):
            return self._p

        def num_points_per_cloud(self):
            return self._l

        def normals_padded(self):
            return self._n

    x, y, xn, yn, (xl, yl) = _chamfer_inputs(True)
    got = p3d.chamfer_distance(Clouds(x.to(device), xl.to(device), xn.to(device)),
                               Clouds(y.to(device), yl.to(device), yn.to(device)))
    want = p3d_chamfer_restated(x, y, xl, yl, xn, yn)
    assert_close(got[0].cpu(), want[0])
    assert_close(got[1].cpu(), want[1])


def test_chamfer_distance_errors():
    x, y = torch.rand(2, 5, 3), torch.rand(2, 6, 3)
    cases = [
        (lambda: p3d.chamfer_distance(x, y, batch_reduction="max"), "batch_reduction"),
        (lambda: p3d.chamfer_distance(x, y, point_reduction="median"), "point_reduction"),
        (lambda: p3d.chamfer_distance(x, y, point_reduction=None), "batch_reduction must be None"),
        (lambda: p3d.chamfer_distance(x, y, norm=3), "norm"),
        (lambda: p3d.chamfer_distance(x, y, x_normals=x, point_reduction="max"), "normals"),
        (lambda: p3d.chamfer_distance(x[0], y), "x must have shape"),
        (lambda: p3d.chamfer_distance(x, [1, 2]), "y must be"),
        (lambda: p3d.chamfer_distance(x, y, x_lengths=torch.tensor([5])), "x_lengths"),
        (lambda: p3d.chamfer_distance(x, y, y_lengths=torch.tensor([3, 7])), "y_lengths"),
        (lambda: p3d.chamfer_distance(x, y, x_normals=x[0]), "x_normals"),
        (lambda: p3d.chamfer_distance(x, y, x_normals=x[:, :2], y_normals=y), "x_normals"),
        (lambda: p3d.chamfer_distance(x, y[:1]), "y does not have the correct shape"),
        (lambda: p3d.chamfer_distance(x, y[..., :2]), "y does not have the correct shape"),
        (lambda: p3d.chamfer_distance(torch.rand(2, 5, 0), torch.rand(2, 6, 0)), "D >= 1"),
        (lambda: p3d.chamfer_distance(x, y, weights=torch.ones(3)), "weights"),
        (lambda: p3d.chamfer_distance(x, y, weights=torch.tensor([1.0, -1.0])), "negative"),
        (lambda: p3d.chamfer_distance(x[:, :0], y, point_reduction="max"), "non-empty"),
    ]
    for call, word in cases:
        with pytest.raises(ValueError, match=word):
            call()


# ============================================================================================
# Point-MAE extensions.chamfer_dist
# ============================================================================================

@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_chamfer_function_matches_point_mae(device, dtype):
    x = torch.randn(3, 3, 37, dtype=torch.float64).to(dtype).transpose(1, 2)  # strided
    y = torch.randn(3, 52, 3, dtype=torch.float64).to(dtype)
    d1, d2 = chamfer_dist.ChamferFunction.apply(x.to(device), y.to(device))
    w1, w2 = point_mae_dists_restated(x, y)
    assert d1.shape == (3, 37) and d2.shape == (3, 52) and d1.dtype == dtype
    assert_close(d1.cpu(), w1.to(dtype), dtype)
    assert_close(d2.cpu(), w2.to(dtype), dtype)


def test_chamfer_function_gradients(device):
    x = torch.randn(2, 11, 3, dtype=torch.float64)
    y = torch.randn(2, 7, 3, dtype=torch.float64)
    g1, g2 = torch.randn(2, 11, dtype=torch.float64), torch.randn(2, 7, dtype=torch.float64)

    def grads(fn, dev):
        a, b = x.clone().to(dev).requires_grad_(), y.clone().to(dev).requires_grad_()
        d1, d2 = fn(a, b)
        ((d1 * g1.to(dev)).sum() + (d2 * g2.to(dev)).sum()).backward()
        return a.grad.cpu(), b.grad.cpu()

    for g, w in zip(grads(chamfer_dist.ChamferFunction.apply, device),
                    grads(point_mae_dists_restated, "cpu")):
        assert_close(g, w)
    assert torch.autograd.gradcheck(chamfer_dist.ChamferFunction.apply,
                                    (x.to(device).requires_grad_(), y.to(device).requires_grad_()),
                                    fast_mode=True)


def _point_mae_losses(x, y):
    d1, d2 = point_mae_dists_restated(x, y)
    return {"ChamferDistanceL2": d1.mean() + d2.mean(),
            "ChamferDistanceL2_split": (d1.mean(), d2.mean()),
            "ChamferDistanceL1": (d1.sqrt().mean() + d2.sqrt().mean()) / 2}


@pytest.mark.parametrize("name", ["ChamferDistanceL2", "ChamferDistanceL2_split",
                                  "ChamferDistanceL1"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_point_mae_losses_match(device, name, dtype):
    x = torch.randn(4, 64, 3, dtype=torch.float64).to(dtype)
    y = torch.randn(4, 48, 3, dtype=torch.float64).to(dtype)
    got = getattr(chamfer_dist, name)()(x.to(device), y.to(device))
    want = _point_mae_losses(x.to(acc_dtype(dtype)), y.to(acc_dtype(dtype)))[name]
    for g, w in zip(got if isinstance(got, tuple) else (got,),
                    want if isinstance(want, tuple) else (want,)):
        assert g.dim() == 0 and g.dtype == acc_dtype(dtype)
        assert_close(g.cpu(), w)


@pytest.mark.parametrize("name", ["ChamferDistanceL2", "ChamferDistanceL1"])
def test_point_mae_loss_gradients(device, name):
    x = torch.randn(2, 20, 3, dtype=torch.float64)
    y = torch.randn(2, 15, 3, dtype=torch.float64)
    a, b = x.clone().to(device).requires_grad_(), y.clone().to(device).requires_grad_()
    getattr(chamfer_dist, name)()(a, b).backward()
    c, d = x.clone().requires_grad_(), y.clone().requires_grad_()
    _point_mae_losses(c, d)[name].backward()
    assert_close(a.grad.cpu(), c.grad)
    assert_close(b.grad.cpu(), d.grad)


def test_point_mae_l1_gradient_is_finite_for_coincident_points(device):
    x = torch.rand(2, 30, 3, device=device, requires_grad=True)
    y = x.detach()[:, torch.randperm(30, device=device)]
    loss = chamfer_dist.ChamferDistanceL1()(x, y)
    loss.backward()
    assert loss.item() == pytest.approx(0, abs=1e-12) and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", ["ChamferDistanceL2", "ChamferDistanceL2_split",
                                  "ChamferDistanceL1"])
def test_ignore_zeros_drops_zero_sum_points_for_a_batch_of_one(device, name):
    x, y = torch.randn(1, 30, 3), torch.randn(1, 25, 3)
    x[0, 3] = 0
    x[0, 10] = torch.tensor([1.0, -1.0, 0.0])  # sums to 0: dropped too, like Point-MAE
    y[0, 20:] = 0
    got = getattr(chamfer_dist, name)(ignore_zeros=True)(x.to(device), y.to(device))
    keep_x, keep_y = x.sum(2).ne(0), y.sum(2).ne(0)
    want = _point_mae_losses(x[keep_x][None], y[keep_y][None])[name]
    for g, w in zip(got if isinstance(got, tuple) else (got,),
                    want if isinstance(want, tuple) else (want,)):
        assert_close(g.cpu(), w)
    # Batches of more than one cloud are left alone, as in Point-MAE.
    x2, y2 = torch.cat([x, x]), torch.cat([y, y])
    got2 = getattr(chamfer_dist, name)(ignore_zeros=True)(x2.to(device), y2.to(device))
    want2 = _point_mae_losses(x2, y2)[name]
    for g, w in zip(got2 if isinstance(got2, tuple) else (got2,),
                    want2 if isinstance(want2, tuple) else (want2,)):
        assert_close(g.cpu(), w)


def test_point_mae_errors():
    x = torch.rand(1, 10, 3)
    cases = [
        (lambda: chamfer_dist.ChamferDistanceL2(ignore_zeros=True)(torch.zeros(1, 5, 3), x),
         "xyz1"),
        (lambda: chamfer_dist.ChamferDistanceL1()(x, x[..., :2]), "xyz2"),
        (lambda: chamfer_dist.ChamferDistanceL2_split()(x[0], x), "xyz1"),
        (lambda: chamfer_dist.ChamferFunction.apply(x, x.double()), "dtype"),
        (lambda: chamfer_dist.ChamferDistanceL2()(x, torch.rand(2, 10, 3)), "batch size"),
    ]
    for call, word in cases:
        with pytest.raises(ValueError, match=word):
            call()
