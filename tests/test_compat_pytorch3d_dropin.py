"""recon_fast.compat.pytorch3d_ops: ball_query against a restatement of pytorch3d's, points of
dimension 1 and 2, and pytorch3d's own error texts (which its users' tests match)."""

import re

import pytest
import torch

from conftest import assert_close
from peer_restatement import radius_squared, sq_dists
from reference import acc_dtype, fps_reference
from recon_fast.compat import pytorch3d_ops as p3d


def p3d_ball_query_restated(p1, p2, lengths1, lengths2, K, radius):
    """pytorch3d's BallQueryCpu: for i < lengths1[n], scan j < lengths2[n] in order, keep the
    first K with dist2 < radius^2; dists 0 and idx -1 elsewhere."""
    N, P1 = p1.shape[:2]
    d = sq_dists(p1, p2).cpu()
    r2 = radius_squared(radius, p1.dtype)
    dists = torch.zeros(N, P1, K, dtype=acc_dtype(p1.dtype))
    idx = torch.full((N, P1, K), -1, dtype=torch.int64)
    for n in range(N):
        for i in range(int(lengths1[n])):
            hits = [j for j in range(int(lengths2[n])) if d[n, i, j] < r2][:K]
            idx[n, i, : len(hits)] = torch.tensor(hits, dtype=torch.int64)
            dists[n, i, : len(hits)] = d[n, i, hits]
    return dists.to(p1.dtype), idx


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("D", [3, 2, 5, 8])  # pytorch3d's own tests use D = 2, 5, 8
def test_ball_query_matches_pytorch3d(device, dtype, D):
    p1 = torch.rand(3, 20, D, dtype=torch.float64).to(dtype)
    p2 = torch.rand(3, 70, D, dtype=torch.float64).to(dtype)
    l1, l2 = torch.tensor([20, 9, 0]), torch.tensor([70, 70, 30])
    got = p3d.ball_query(p1.to(device), p2.to(device), l1.to(device), l2.to(device), K=6,
                         radius=0.5)
    want_d, want_i = p3d_ball_query_restated(p1, p2, l1, l2, 6, 0.5)
    assert torch.equal(got.idx.cpu(), want_i)
    assert_close(got.dists.cpu(), want_d, dtype)
    safe = want_i.clamp_min(0)
    want_nn = torch.stack([p2[n][safe[n]] for n in range(3)]) * (want_i >= 0)[..., None]
    assert torch.equal(got.knn.cpu(), want_nn)


def test_ball_query_defaults_and_gradient(device):
    p1 = torch.rand(2, 10, 3, dtype=torch.float64, device=device, requires_grad=True)
    p2 = torch.rand(2, 40, 3, dtype=torch.float64, device=device, requires_grad=True)
    got = p3d.ball_query(p1, p2)  # K=500, radius=0.2, return_nn=True
    assert got.idx.shape == (2, 10, 500) and got.knn.shape == (2, 10, 500, 3)
    assert p3d.ball_query(p1, p2, return_nn=False, skip_points_outside_cube=True).knn is None
    got.dists.sum().backward()
    safe = got.idx.clamp_min(0)
    a, b = p1.detach().clone().requires_grad_(), p2.detach().clone().requires_grad_()
    nn = torch.stack([b[n][safe[n]] for n in range(2)])
    (((a[:, :, None] - nn) ** 2).sum(-1) * (got.idx >= 0)).sum().backward()
    assert_close(p1.grad, a.grad)
    assert_close(p2.grad, b.grad)


@pytest.mark.parametrize("D", [1, 2, 5, 8])  # pytorch3d's own tests use D = 2, 5, 8
def test_knn_and_fps_take_points_of_any_dimension(device, D):
    p1, p2 = torch.rand(2, 15, D), torch.rand(2, 40, D)
    lengths2 = torch.tensor([40, 9])
    got = p3d.knn_points(p1.to(device), p2.to(device), lengths2=lengths2.to(device), K=12,
                         return_nn=True)
    d = sq_dists(p1, p2).masked_fill(torch.arange(40) >= lengths2[:, None, None], float("inf"))
    want_d, want_i = torch.sort(d, dim=2, stable=True)
    missing = torch.arange(12) >= lengths2[:, None, None]  # pytorch3d pads with index 0, dist 0
    assert torch.equal(got.idx.cpu(), want_i[..., :12].masked_fill(missing, 0))
    assert_close(got.dists.cpu(), want_d[..., :12].masked_fill(missing, 0))
    assert got.knn.shape == (2, 15, 12, D)
    points, idx = p3d.sample_farthest_points(p2.to(device), lengths2.to(device), K=6)
    want = fps_reference(p2, 6, lengths2)
    assert torch.equal(idx.cpu(), want)
    assert torch.equal(points.cpu(), torch.stack([p2[n][want[n]] for n in range(2)]))


@pytest.mark.parametrize("D", [1, 2])
def test_knn_fps_and_chamfer_take_points_of_dimension_below_three(device, D):
    p1, p2 = torch.rand(2, 15, D), torch.rand(2, 40, D)
    got = p3d.knn_points(p1.to(device), p2.to(device), K=4, return_nn=True)
    d = sq_dists(p1, p2)
    want_d, want_i = torch.sort(d, dim=2, stable=True)
    assert torch.equal(got.idx.cpu(), want_i[..., :4])
    assert_close(got.dists.cpu(), want_d[..., :4])
    assert got.knn.shape == (2, 15, 4, D)
    points, idx = p3d.sample_farthest_points(p2.to(device), K=5)
    assert points.shape == (2, 5, D) and idx[:, 0].tolist() == [0, 0]
    loss, _ = p3d.chamfer_distance(p1.to(device), p2.to(device))
    want = d.min(2).values.mean(1) + d.min(1).values.mean(1)
    assert_close(loss.cpu(), want.mean())


# pytorch3d 0.7.9's texts, each a case that raises it.
P3D_ERRORS = [
    (lambda x, y: p3d.knn_points(x, y[:1]), "pts1 and pts2 must have the same batch dimension."),
    (lambda x, y: p3d.knn_points(x, y[..., :2]),
     "pts1 and pts2 must have the same point dimension."),
    (lambda x, y: p3d.knn_points(x, y, norm=3), "Support for 1 or 2 norm."),
    (lambda x, y: p3d.ball_query(x, y[:1]), "pts1 and pts2 must have the same batch dimension."),
    (lambda x, y: p3d.ball_query(x, y[..., :2]),
     "pts1 and pts2 must have the same point dimension."),
    (lambda x, y: p3d.knn_gather(y, torch.zeros(3, 5, 1, dtype=torch.int64)),
     "x and idx must have same batch dimension."),
    (lambda x, y: p3d.sample_farthest_points(y, lengths=torch.tensor([6])),
     "points and lengths must have same batch dimension."),
    (lambda x, y: p3d.sample_farthest_points(y, lengths=torch.tensor([7, 6])),
     "A value in lengths was too large."),
    (lambda x, y: p3d.sample_farthest_points(y, K=[3, 4, 5]),
     "K and points must have the same batch dimension"),
    (lambda x, y: p3d.chamfer_distance(x, y, batch_reduction="max"),
     'batch_reduction must be one of ["mean", "sum"] or None'),
    (lambda x, y: p3d.chamfer_distance(x, y, point_reduction="median"),
     'point_reduction must be one of ["mean", "sum", "max"] or None'),
    (lambda x, y: p3d.chamfer_distance(x, y, point_reduction=None),
     "Batch reduction must be None if point_reduction is None"),
    (lambda x, y: p3d.chamfer_distance(x, y, norm=3), "Support for 1 or 2 norm."),
    (lambda x, y: p3d.chamfer_distance(x, y, x_normals=x, point_reduction="max"),
     'Normals must be None if point_reduction is "max"'),
    (lambda x, y: p3d.chamfer_distance(x[0], y), "Expected points to be of shape (N, P, D)"),
    (lambda x, y: p3d.chamfer_distance(x, y, x_lengths=torch.tensor([5])),
     "Expected lengths to be of shape (N,)"),
    (lambda x, y: p3d.chamfer_distance(x, y, y_lengths=torch.tensor([3, 7])),
     "A length value was too long"),
    (lambda x, y: p3d.chamfer_distance(x, y, x_normals=x[0]),
     "Expected normals to be of shape (N, P, 3"),
    (lambda x, y: p3d.chamfer_distance(x, [1, 2]),
     "The input pointclouds should be either Pointclouds objects or torch.Tensor of shape "
     "(minibatch, num_points, 3)."),
    (lambda x, y: p3d.chamfer_distance(x, y[:1]), "y does not have the correct shape."),
    (lambda x, y: p3d.chamfer_distance(x, y, weights=torch.ones(3)),
     "weights must be of shape (N,)."),
    (lambda x, y: p3d.chamfer_distance(x, y, weights=torch.tensor([1.0, -1.0])),
     "weights cannot be negative."),
]


@pytest.mark.parametrize("call, text", P3D_ERRORS, ids=[t for _, t in P3D_ERRORS])
def test_errors_start_with_pytorch3d_text(call, text):
    x, y = torch.rand(2, 5, 3), torch.rand(2, 6, 3)
    with pytest.raises(ValueError) as error:
        call(x, y)
    message = str(error.value)
    assert message.startswith(text), message
    assert re.search(re.escape(text), message)  # assertRaisesRegex-style matching
    assert "'shape" not in message  # tensor descriptions are not printed inside quotes


def _chamfer_reference(x, y, x_lengths, y_lengths, norm):
    """pytorch3d's Chamfer restated: per-cloud mean of each point's nearest distance, both ways,
    over the valid points only, then the batch mean."""
    total = 0
    for n in range(x.shape[0]):
        a, b = x[n, :x_lengths[n]], y[n, :y_lengths[n]]
        diff = a[:, None, :] - b[None, :, :]
        d = diff.abs().sum(-1) if norm == 1 else (diff * diff).sum(-1)
        total = total + d.min(1).values.mean() + d.min(0).values.mean()
    return total / x.shape[0]


@pytest.mark.parametrize("D", [5, 8, 64])
@pytest.mark.parametrize("norm", [1, 2])
def test_chamfer_over_more_than_three_dimensions(device, D, norm):
    x = torch.rand(2, 13, D, dtype=torch.float64, device=device, requires_grad=True)
    y = torch.rand(2, 21, D, dtype=torch.float64, device=device, requires_grad=True)
    xl = torch.tensor([13, 7], device=device)
    yl = torch.tensor([21, 4], device=device)
    loss, _ = p3d.chamfer_distance(x, y, x_lengths=xl, y_lengths=yl, norm=norm)
    want = _chamfer_reference(x, y, xl.tolist(), yl.tolist(), norm)
    assert_close(loss, want)
    got_grads = torch.autograd.grad(loss, (x, y))
    want_grads = torch.autograd.grad(want, (x, y))
    for got, ref in zip(got_grads, want_grads):
        assert_close(got, ref)


def test_chamfer_over_more_than_three_dimensions_keeps_normals_and_empty_clouds():
    x, y = torch.rand(2, 9, 6), torch.rand(2, 11, 6)
    nx, ny = torch.randn(2, 9, 6), torch.randn(2, 11, 6)  # normals have the points' shape
    loss, loss_normals = p3d.chamfer_distance(x, y, x_normals=nx, y_normals=ny)
    d = sq_dists(x, y)
    assert_close(loss, (d.min(2).values.mean(1) + d.min(1).values.mean(1)).mean())
    cos_x = torch.nn.functional.cosine_similarity(
        nx, torch.stack([ny[n][d[n].argmin(1)] for n in range(2)]), dim=2, eps=1e-6)
    cos_y = torch.nn.functional.cosine_similarity(
        ny, torch.stack([nx[n][d[n].argmin(0)] for n in range(2)]), dim=2, eps=1e-6)
    assert_close(loss_normals, ((1 - cos_x.abs()).mean(1) + (1 - cos_y.abs()).mean(1)).mean())
    empty, _ = p3d.chamfer_distance(x, y[:, :0])
    assert empty.item() == 0


def test_chamfer_of_zero_dimensional_points_is_refused():
    p = torch.rand(2, 10, 0)
    with pytest.raises(ValueError, match="x must have points of dimension D >= 1"):
        p3d.chamfer_distance(p, p)
