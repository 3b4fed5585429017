"""k nearest neighbours vs the plain-PyTorch reference, with gradients."""

import pytest
import torch

from conftest import ALL_DTYPES, assert_close
from reference import knn_reference
from recon_fast import ops


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("norm", [2, 1])
@pytest.mark.parametrize("M,N,k", [(1, 1, 1), (5, 7, 7), (64, 1024, 32), (3, 65, 17),
                                   (100, 5000, 16)])
def test_knn_matches_reference(device, dtype, norm, M, N, k):
    q = torch.randn(2, M, 3, dtype=torch.float64).to(dtype)
    p = torch.randn(2, N, 3, dtype=torch.float64).to(dtype)
    got = ops.knn(q.to(device), p.to(device), k, norm=norm)
    want_d, want_i = knn_reference(q, p, k, norm=norm)
    assert got.idx.dtype == torch.int64 and got.dists.dtype == dtype
    assert torch.equal(got.idx.cpu(), want_i)
    assert_close(got.dists.cpu(), want_d, dtype)


@pytest.mark.parametrize("N", [500, 9000])  # brute force and kd-tree paths
def test_knn_ties_go_to_lowest_index(device, N):
    p = torch.randint(0, 3, (2, N, 3)).float()
    q = torch.randint(0, 3, (2, 80, 3)).float()
    got = ops.knn(q.to(device), p.to(device), 40)
    assert torch.equal(got.idx.cpu(), knn_reference(q, p, 40)[1])


def test_knn_sorted_and_includes_self(device):
    p = torch.rand(3, 200, 3)
    got = ops.knn(p.to(device), p.to(device), 5)
    assert (got.dists[..., 1:] >= got.dists[..., :-1]).all()
    assert torch.equal(got.idx[..., 0].cpu(), torch.arange(200).expand(3, 200))


def test_knn_ragged_lengths(device):
    p, q = torch.rand(3, 50, 3), torch.rand(3, 20, 3)
    pl, ql = torch.tensor([50, 6, 30]), torch.tensor([20, 20, 4])
    got = ops.knn(q.to(device), p.to(device), 8, ql.to(device), pl.to(device))
    want_d, want_i = knn_reference(q, p, 8, ql, pl)
    assert torch.equal(got.idx.cpu(), want_i)
    assert_close(got.dists.cpu(), want_d)
    assert (got.idx[1, :, 6:] == -1).all() and (got.dists[1, :, 6:] == 0).all()
    assert (got.idx[2, 4:] == -1).all()


def test_knn_return_nn_and_non_contiguous(device):
    p = torch.rand(2, 3, 90).transpose(1, 2)
    q = torch.rand(2, 3, 10).transpose(1, 2)
    got = ops.knn(q.to(device), p.to(device), 4, return_nn=True)
    want_d, want_i = knn_reference(q.contiguous(), p.contiguous(), 4)
    assert torch.equal(got.idx.cpu(), want_i)
    expected_nn = torch.stack([p[b][want_i[b]] for b in range(2)])
    assert torch.equal(got.knn.cpu(), expected_nn)


@pytest.mark.parametrize("norm", [2, 1])
def test_knn_gradcheck(device, norm):
    q = torch.rand(2, 6, 3, dtype=torch.float64, device=device, requires_grad=True)
    p = torch.rand(2, 15, 3, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: ops.knn(a, b, 4, norm=norm).dists, (q, p))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_knn_gradients_match_reference(device, dtype):
    q = torch.rand(2, 30, 3).to(dtype)
    p = torch.rand(2, 70, 3).to(dtype)
    weights = torch.rand(2, 30, 5)

    def grads(fn, dev):
        a = q.to(dev).requires_grad_()
        b = p.to(dev).requires_grad_()
        (fn(a, b).float() * weights.to(dev)).sum().backward()
        return a.grad.cpu(), b.grad.cpu()

    got = grads(lambda a, b: ops.knn(a, b, 5).dists, device)
    want = grads(lambda a, b: knn_reference(a, b, 5)[0], "cpu")
    for g, w in zip(got, want):
        assert_close(g, w, dtype)


@pytest.mark.parametrize("make_args,match", [
    (lambda: (torch.rand(2, 4, 3), torch.rand(2, 4, 3), 5), r"k must be in \[1, 4\]"),
    (lambda: (torch.rand(2, 4, 3), torch.rand(2, 4, 3), 0), r"k must be in \[1, 4\]"),
    (lambda: (torch.rand(2, 4, 2), torch.rand(2, 4, 3), 1), "same point dimension D"),
    (lambda: (torch.rand(2, 4), torch.rand(2, 4, 3), 1), "query must have shape"),
    (lambda: (torch.rand(2, 4, 3), torch.rand(3, 4, 3), 1), "batch size"),
    (lambda: (torch.rand(2, 4, 3), torch.rand(2, 4, 3).double(), 1), "dtype"),
    (lambda: (torch.rand(2, 4, 3), torch.rand(2, 0, 3), 1), "k must be in|points is empty"),
    (lambda: (torch.rand(2, 4, 3), torch.full((2, 4, 3), float("inf")), 1), "points contains NaN or inf"),
])
def test_knn_bad_input(make_args, match):
    with pytest.raises(ValueError, match=match):
        ops.knn(*make_args())


def test_knn_bad_norm():
    with pytest.raises(ValueError, match="norm must be 1"):
        ops.knn(torch.rand(1, 2, 3), torch.rand(1, 2, 3), 1, norm=3)


def test_knn_opcheck(device):
    q = torch.rand(2, 7, 3, device=device, requires_grad=True)
    p = torch.rand(2, 20, 3, device=device, requires_grad=True)
    ql, pl = torch.tensor([7, 3], device=device), torch.tensor([20, 9], device=device)
    torch.library.opcheck(torch.ops.recon_fast.knn.default, (q, p, ql, pl, 5, 2))
    torch.library.opcheck(torch.ops.recon_fast.knn.default, (q, p, ql, pl, 5, 1))


def test_knn_under_torch_compile(device):
    q = torch.rand(2, 16, 3, device=device, requires_grad=True)
    p = torch.rand(2, 100, 3, device=device)

    def loss(a, b):
        return ops.knn(a, b, 8).dists.sum()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    out = compiled(q, p)
    (grad,) = torch.autograd.grad(out, q)
    (want,) = torch.autograd.grad(loss(q, p), q)
    assert_close(out.detach(), loss(q, p).detach())
    assert_close(grad, want)


def test_knn_rejects_coordinates_whose_squares_overflow():
    with pytest.raises(ValueError, match="points has coordinates above 1e\\+18"):
        ops.knn(torch.rand(1, 2, 3), torch.full((1, 4, 3), 3e19), 1)


def test_knn_backward_opcheck_with_strided_inputs(device):
    # The kernels return contiguous gradients for strided query / points: so must the fake kernel.
    q = torch.rand(2, 3, 6, device=device).transpose(1, 2)  # (2, 6, 3), not contiguous
    p = torch.rand(2, 3, 20, device=device).transpose(1, 2)
    full = torch.tensor([6, 6], device=device), torch.tensor([20, 20], device=device)
    dist, idx = torch.ops.recon_fast.knn(q, p, *full, 5, 2)
    torch.library.opcheck(torch.ops.recon_fast.knn_backward.default,
                          (torch.rand_like(dist), q, p, idx, 2))
