"""Ball query vs the plain-PyTorch reference: indices, distances, gradients, ragged and empty
clouds, any point dimension, the op contract (opcheck) and argument errors."""

import pytest
import torch

from conftest import ALL_DTYPES, assert_close
from reference import ball_query_reference
from recon_fast import ops


def _clouds(B, M, N, D, dtype, scale=1.0):
    q = (torch.rand(B, M, D, dtype=torch.float64) * scale).to(dtype)
    p = (torch.rand(B, N, D, dtype=torch.float64) * scale).to(dtype)
    return q, p


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("D", [3, 1, 2, 5])
@pytest.mark.parametrize("M,N,k,radius", [(1, 1, 1, 0.5), (7, 33, 4, 0.3), (64, 500, 16, 0.2),
                                          (5, 20, 40, 0.6), (17, 300, 1, 0.1)])
def test_ball_query_matches_reference(device, dtype, D, M, N, k, radius):
    q, p = _clouds(2, M, N, D, dtype)
    got = ops.ball_query(q.to(device), p.to(device), k, radius)
    want_d, want_i = ball_query_reference(q, p, k, radius)
    assert got.idx.dtype == torch.int64 and got.dists.dtype == dtype
    assert got.idx.shape == (2, M, k) and got.knn is None
    assert torch.equal(got.idx.cpu(), want_i)
    assert_close(got.dists.cpu(), want_d, dtype)


def test_ball_query_takes_the_first_points_in_index_order_not_the_nearest(device):
    # Four points inside the ball, the nearest last: the first k in index order are returned.
    p = torch.tensor([[[0.3, 0, 0], [5, 5, 5], [0.2, 0, 0], [0.1, 0, 0], [0.0, 0, 0]]])
    q = torch.zeros(1, 1, 3)
    got = ops.ball_query(q.to(device), p.to(device), 3, 0.5)
    assert got.idx.tolist() == [[[0, 2, 3]]]
    assert_close(got.dists.cpu(), torch.tensor([[[0.09, 0.04, 0.01]]]))


def test_ball_query_boundary_is_strict(device):
    # Squared distances exactly radius^2 (0.5^2 = 0.25 is exact in binary) are outside.
    p = torch.tensor([[[0.5, 0, 0], [0, 0.5, 0], [0.25, 0, 0]]])
    got = ops.ball_query(torch.zeros(1, 1, 3, device=device), p.to(device), 3, 0.5)
    assert got.idx.tolist() == [[[2, -1, -1]]]
    got = ops.ball_query(torch.zeros(1, 1, 3, device=device), p.to(device), 3, 0.0)
    assert got.idx.tolist() == [[[-1, -1, -1]]]


def test_ball_query_ragged_and_empty_clouds(device):
    q, p = _clouds(4, 12, 60, 3, torch.float32)
    ql, pl = torch.tensor([12, 5, 12, 0]), torch.tensor([60, 60, 0, 7])
    got = ops.ball_query(q.to(device), p.to(device), 6, 0.4, ql.to(device), pl.to(device),
                         return_nn=True)
    want_d, want_i = ball_query_reference(q, p, 6, 0.4, ql, pl)
    assert torch.equal(got.idx.cpu(), want_i)
    assert_close(got.dists.cpu(), want_d)
    assert (got.idx[1, 5:] == -1).all() and (got.idx[2] == -1).all() and (got.idx[3] == -1).all()
    assert (got.dists[2] == 0).all()
    want_nn = torch.stack([torch.where(want_i[b, ..., None] >= 0, p[b][want_i[b].clamp_min(0)], 0)
                           for b in range(4)])
    assert torch.equal(got.knn.cpu(), want_nn)


@pytest.mark.parametrize("B,M,N", [(0, 4, 4), (2, 0, 5), (2, 5, 0)])
def test_ball_query_empty_tensors(device, B, M, N):
    q, p = torch.rand(B, M, 3, device=device), torch.rand(B, N, 3, device=device)
    got = ops.ball_query(q, p, 3, 0.5)
    assert got.idx.shape == (B, M, 3) and got.dists.shape == (B, M, 3)
    assert (got.idx == -1).all()


def test_ball_query_non_contiguous_inputs(device):
    q = torch.rand(2, 3, 10).transpose(1, 2)
    p = torch.rand(2, 3, 90).transpose(1, 2)
    got = ops.ball_query(q.to(device), p.to(device), 5, 0.3)
    want_d, want_i = ball_query_reference(q.contiguous(), p.contiguous(), 5, 0.3)
    assert torch.equal(got.idx.cpu(), want_i)
    assert_close(got.dists.cpu(), want_d)


def _dists_through_autograd(q, p, idx):
    """The reference's distances rebuilt from idx with differentiable torch ops."""
    safe = idx.clamp_min(0)
    neighbours = torch.stack([p[b][safe[b]] for b in range(p.shape[0])])  # (B, M, k, D)
    d = ((q[:, :, None, :] - neighbours) ** 2).sum(-1)
    return torch.where(idx >= 0, d, torch.zeros_like(d))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("D", [3, 4])
def test_ball_query_gradients_match_autograd_of_the_reference(device, dtype, D):
    q, p = _clouds(2, 9, 40, D, dtype)
    ql, pl = torch.tensor([9, 4]), torch.tensor([40, 25])
    q1, p1 = q.clone().to(device).requires_grad_(), p.clone().to(device).requires_grad_()
    got = ops.ball_query(q1, p1, 5, 0.45, ql.to(device), pl.to(device))
    g = torch.randn(got.dists.shape, dtype=torch.float64)
    (got.dists * g.to(device, dtype)).sum().backward()
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    q2, p2 = q.to(acc).requires_grad_(), p.to(acc).requires_grad_()
    (_dists_through_autograd(q2, p2, got.idx.cpu()) * g.to(acc)).sum().backward()
    assert_close(q1.grad.cpu(), q2.grad.to(dtype), dtype)
    assert_close(p1.grad.cpu(), p2.grad.to(dtype), dtype)


def test_ball_query_gradcheck_float64(device):
    q, p = _clouds(2, 5, 20, 3, torch.float64)
    q, p = q.to(device).requires_grad_(), p.to(device).requires_grad_()
    lengths = torch.tensor([20, 13], device=device)
    torch.autograd.gradcheck(lambda a, b: ops.ball_query(a, b, 4, 0.5, None, lengths).dists,
                             (q, p))


def test_ball_query_opcheck(device):
    q, p = _clouds(2, 6, 30, 3, torch.float32)
    q, p = q.to(device).requires_grad_(), p.to(device).requires_grad_()
    ql = torch.tensor([6, 3], device=device)
    pl = torch.tensor([30, 11], device=device)
    torch.library.opcheck(torch.ops.recon_fast.ball_query.default, (q, p, ql, pl, 4, 0.4))
    grad = torch.rand(2, 6, 4, device=device)
    idx = torch.ops.recon_fast.ball_query(q, p, ql, pl, 4, 0.4)[1]
    torch.library.opcheck(torch.ops.recon_fast.ball_query_backward.default,
                          (grad, q.detach(), p.detach(), idx))


@pytest.mark.parametrize("call, message", [
    (lambda q, p: ops.ball_query(q, p[..., :2], 4, 0.3), "same point dimension"),
    (lambda q, p: ops.ball_query(q, p[:1], 4, 0.3), "batch size"),
    (lambda q, p: ops.ball_query(q, p.double(), 4, 0.3), "dtype"),
    (lambda q, p: ops.ball_query(q, p, 0, 0.3), "k must be in"),
    (lambda q, p: ops.ball_query(q, p, 4, -0.1), "radius must be finite and >= 0"),
    (lambda q, p: ops.ball_query(q, p, 4, float("nan")), "radius must be finite"),
    (lambda q, p: ops.ball_query(q, p, 4, "0.3"), "radius must be a number"),
    (lambda q, p: ops.ball_query(q[0], p, 4, 0.3), "query must have shape"),
    (lambda q, p: ops.ball_query(q, p, 4, 0.3, point_lengths=torch.tensor([9, 99])),
     "point_lengths must lie in"),
    (lambda q, p: ops.ball_query(q.long(), p, 4, 0.3), "query must be float16"),
])
def test_ball_query_errors_name_the_argument(call, message):
    q, p = torch.rand(2, 5, 3), torch.rand(2, 50, 3)
    with pytest.raises(ValueError, match=message):
        call(q, p)


def test_raw_op_rejects_bad_lengths_on_cpu():
    q, p = torch.rand(1, 2, 3), torch.rand(1, 5, 3)
    with pytest.raises(ValueError, match=r"point_lengths\[0\] = 9"):
        torch.ops.recon_fast.ball_query(q, p, torch.tensor([2]), torch.tensor([9]), 2, 0.5)
