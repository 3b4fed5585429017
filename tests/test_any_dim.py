"""kNN (with its backward) and farthest point sampling for points of any dimension D >= 1, against
the plain-PyTorch references (full distance matrices summed coordinate by coordinate and a stable
sort; the naive FPS loop; cdist/topk), on every device and CPU SIMD path."""

import pytest
import torch

import recon_fast
from conftest import ALL_DTYPES, assert_close
from reference import fps_reference, knn_reference
from recon_fast import ops

DIMS = [1, 2, 5, 8, 64]
CAPABILITIES = recon_fast.build_info()["cpu_capabilities"]


def cloud(B, N, D, dtype=torch.float32, device="cpu"):
    return torch.randn(B, N, D, dtype=torch.float64).to(dtype).to(device)


def zero_padded(x, D):
    """x with zero coordinates appended up to dimension D: the same distances, exactly."""
    return torch.cat([x, x.new_zeros((*x.shape[:-1], D - x.shape[-1]))], dim=-1)


# ---------------------------------------------------------------------------------------------
# kNN forward


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("D", DIMS)
@pytest.mark.parametrize("norm", [2, 1])
@pytest.mark.parametrize("M,N,k", [(1, 1, 1), (5, 7, 7), (33, 70, 9), (64, 300, 16)])
def test_knn_matches_reference(device, dtype, D, norm, M, N, k):
    q, p = cloud(2, M, D, dtype), cloud(2, N, D, dtype)
    got = ops.knn(q.to(device), p.to(device), k, norm=norm)
    want_d, want_i = knn_reference(q, p, k, norm=norm)
    assert got.idx.dtype == torch.int64 and got.dists.dtype == dtype
    assert got.dists.shape == (2, M, k)
    assert torch.equal(got.idx.cpu(), want_i)
    assert_close(got.dists.cpu(), want_d, dtype)


@pytest.mark.parametrize("D", [5, 64])
def test_knn_matches_cdist_topk(device, D):
    # What DGCNN-style code computes: cdist then topk (tolerance only: cdist sums differently).
    q, p = cloud(3, 40, D, torch.float64), cloud(3, 200, D, torch.float64)
    got = ops.knn(q.to(device), p.to(device), 12)
    want_d, want_i = torch.topk(torch.cdist(q, p) ** 2, 12, dim=-1, largest=False)
    torch.testing.assert_close(got.dists.cpu(), want_d, atol=1e-9, rtol=1e-9)
    assert torch.equal(got.idx.cpu(), want_i)  # random float64 data: no ties


@pytest.mark.parametrize("D", [1, 2, 5])
def test_knn_ties_go_to_lowest_index(device, D):
    p = torch.randint(0, 3, (2, 400, D)).float()
    q = torch.randint(0, 3, (2, 50, D)).float()
    got = ops.knn(q.to(device), p.to(device), 40)
    want_d, want_i = knn_reference(q, p, 40)
    assert torch.equal(got.idx.cpu(), want_i)
    assert torch.equal(got.dists.cpu(), want_d)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("D", [1, 2])
def test_knn_3d_path_equals_general_path_on_zero_padded_points(device, dtype, D):
    # A zero coordinate adds +0 to every distance: the 3-D kernels on (x, 0...) and the general
    # kernels on x, and the general kernels on (x, 0) in D + 3, must agree bit for bit.
    q, p = cloud(2, 30, D, dtype, device), cloud(2, 1500, D, dtype, device)
    low = ops.knn(q, p, 20)
    three = ops.knn(zero_padded(q, 3), zero_padded(p, 3), 20)
    high = ops.knn(zero_padded(q, D + 3), zero_padded(p, D + 3), 20)
    for other in (three, high):
        assert torch.equal(low.idx, other.idx)
        assert torch.equal(low.dists, other.dists)


@pytest.mark.parametrize("norm", [2, 1])
def test_knn_3d_results_unchanged(device, norm):
    # D = 3 keeps its own kernels (brute force, Morton scan, kd-tree): the reference's answer, and
    # the general kernels' answer on the same points with a zero fourth coordinate.
    for M, N, k in [(5, 7, 7), (64, 1024, 32), (100, 5000, 16)]:
        q, p = cloud(2, M, 3, device=device), cloud(2, N, 3, device=device)
        got = ops.knn(q, p, k, norm=norm)
        want_d, want_i = knn_reference(q.cpu(), p.cpu(), k, norm=norm)
        assert torch.equal(got.idx.cpu(), want_i)
        assert_close(got.dists.cpu(), want_d)
        four = ops.knn(zero_padded(q, 4), zero_padded(p, 4), k, norm=norm)
        assert torch.equal(got.idx, four.idx) and torch.equal(got.dists, four.dists)


@pytest.mark.parametrize("D", [2, 7])
def test_knn_ragged_and_empty_clouds(device, D):
    q, p = cloud(4, 20, D), cloud(4, 50, D)
    ql, pl = torch.tensor([20, 20, 4, 0]), torch.tensor([50, 6, 0, 30])
    got = ops.knn(q.to(device), p.to(device), 8, ql.to(device), pl.to(device))
    want_d, want_i = knn_reference(q, p, 8, ql, pl)
    assert torch.equal(got.idx.cpu(), want_i)
    assert_close(got.dists.cpu(), want_d)
    assert (got.idx[1, :, 6:] == -1).all() and (got.dists[1, :, 6:] == 0).all()
    assert (got.idx[2] == -1).all() and (got.idx[3] == -1).all()


@pytest.mark.parametrize("B,M", [(0, 5), (2, 0)])
def test_knn_empty_batch_or_queries(device, B, M):
    got = ops.knn(cloud(B, M, 6, device=device), cloud(B, 9, 6, device=device), 4)
    assert got.idx.shape == (B, M, 4) and got.dists.shape == (B, M, 4)


@pytest.mark.parametrize("D", [2, 5])
def test_knn_non_contiguous_and_return_nn(device, D):
    p = torch.rand(2, D, 90).transpose(1, 2)
    q = torch.rand(2, D, 10).transpose(1, 2)
    got = ops.knn(q.to(device), p.to(device), 4, return_nn=True)
    want_d, want_i = knn_reference(q.contiguous(), p.contiguous(), 4)
    assert torch.equal(got.idx.cpu(), want_i)
    assert got.knn.shape == (2, 10, 4, D)
    assert torch.equal(got.knn.cpu(), torch.stack([p[b][want_i[b]] for b in range(2)]))


# ---------------------------------------------------------------------------------------------
# kNN backward


@pytest.mark.parametrize("D", [1, 2, 5])
@pytest.mark.parametrize("norm", [2, 1])
def test_knn_gradcheck(device, D, norm):
    q = torch.rand(2, 6, D, dtype=torch.float64, device=device, requires_grad=True)
    p = torch.rand(2, 15, D, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: ops.knn(a, b, 4, norm=norm).dists, (q, p))


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("D", [2, 5, 64])
@pytest.mark.parametrize("norm", [2, 1])
def test_knn_gradients_match_reference(device, dtype, D, norm):
    q, p = cloud(2, 30, D, dtype), cloud(2, 70, D, dtype)
    ql, pl = torch.tensor([30, 11]), torch.tensor([70, 3])  # missing neighbours: no gradient
    weights = torch.rand(2, 30, 5)

    def grads(fn, dev):
        a = q.to(dev).requires_grad_()
        b = p.to(dev).requires_grad_()
        (fn(a, b).float() * weights.to(dev)).sum().backward()
        return a.grad.cpu(), b.grad.cpu()

    got = grads(lambda a, b: ops.knn(a, b, 5, ql.to(a.device), pl.to(a.device), norm=norm).dists,
                device)
    want = grads(lambda a, b: knn_reference(a, b, 5, ql, pl, norm=norm)[0], "cpu")
    for g, w in zip(got, want):
        assert g.dtype == dtype and g.shape == w.shape
        assert_close(g.float(), w.float(), dtype if dtype != torch.float64 else torch.float32)


def test_knn_opcheck(device):
    q = torch.rand(2, 7, 5, device=device, requires_grad=True)
    p = torch.rand(2, 20, 5, device=device, requires_grad=True)
    ql, pl = torch.tensor([7, 3], device=device), torch.tensor([20, 9], device=device)
    torch.library.opcheck(torch.ops.recon_fast.knn.default, (q, p, ql, pl, 5, 2))
    torch.library.opcheck(torch.ops.recon_fast.knn.default, (q, p, ql, pl, 5, 1))
    strided_q = torch.rand(2, 2, 6, device=device).transpose(1, 2)
    strided_p = torch.rand(2, 2, 20, device=device).transpose(1, 2)
    full = torch.tensor([6, 6], device=device), torch.tensor([20, 20], device=device)
    dist, idx = torch.ops.recon_fast.knn(strided_q, strided_p, *full, 5, 2)
    torch.library.opcheck(torch.ops.recon_fast.knn_backward.default,
                          (torch.rand_like(dist), strided_q, strided_p, idx, 2))


def test_knn_argument_errors(device):
    q, p = torch.rand(1, 4, 5, device=device), torch.rand(1, 9, 4, device=device)
    with pytest.raises(ValueError, match="query and points must have the same point dimension D"):
        ops.knn(q, p, 2)
    with pytest.raises(ValueError, match=r"query must have points of dimension D >= 1"):
        ops.knn(torch.rand(1, 4, 0, device=device), torch.rand(1, 9, 0, device=device), 2)
    full = torch.tensor([4], device=device), torch.tensor([9], device=device)
    # The kernels check the same (the op can be called without the Python layer).
    with pytest.raises(ValueError, match="query and points must have the same point dimension D"):
        torch.ops.recon_fast.knn(q, p, *full, 2, 2)
    with pytest.raises(ValueError, match="query must have points of dimension D >= 1"):
        torch.ops.recon_fast.knn(q[..., :0], p[..., :0], *full, 2, 2)
    idx = torch.zeros(1, 4, 2, dtype=torch.int64, device=device)
    with pytest.raises(ValueError, match="query and points must have the same point dimension D"):
        torch.ops.recon_fast.knn_backward(torch.rand(1, 4, 2, device=device), q, p, idx, 2)


# ---------------------------------------------------------------------------------------------
# Farthest point sampling


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("D", DIMS)
@pytest.mark.parametrize("N,m", [(1, 1), (7, 3), (100, 37), (1000, 50)])
def test_fps_matches_reference(device, dtype, D, N, m):
    xyz = cloud(2, N, D, dtype)
    got = ops.fps(xyz.to(device), m)
    assert got.dtype == torch.int64 and got.shape == (2, m)
    assert torch.equal(got.cpu(), fps_reference(xyz, m))


@pytest.mark.parametrize("D", [1, 2, 5])
def test_fps_ties_go_to_lowest_index(device, D):
    xyz = torch.randint(0, 4, (2, 300, D)).float()
    assert torch.equal(ops.fps(xyz.to(device), 60).cpu(), fps_reference(xyz, 60))


@pytest.mark.parametrize("D", [2, 6])
def test_fps_ragged_start_and_min_norm(device, D):
    xyz = cloud(4, 80, D)
    xyz[0, :10] *= 1e-3  # inside pointnet2's 1e-3 ball: never sampled
    lengths = torch.tensor([80, 5, 0, 33])
    start = torch.tensor([3, 4, 0, 32])
    got = ops.fps(xyz.to(device), 20, lengths.to(device), start_idx=start.to(device),
                  min_norm_sq=1e-3)
    want = fps_reference(xyz, 20, lengths, start, min_norm_sq=1e-3)
    assert torch.equal(got.cpu(), want)
    assert (got[1, 5:] == -1).all() and (got[2] == -1).all()
    assert not (got[0, 1:, None].cpu() == torch.arange(10)).any()


@pytest.mark.parametrize("D", [1, 5])
def test_fps_nothing_eligible_gives_index_zero(device, D):
    xyz = cloud(1, 20, D) * 1e-4
    got = ops.fps(xyz.to(device), 6, start_idx=torch.tensor([7], device=device), min_norm_sq=1e-3)
    assert got.cpu().tolist() == [[7, 0, 0, 0, 0, 0]]


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("D", [1, 2])
def test_fps_3d_path_equals_general_path_on_zero_padded_points(device, dtype, D):
    xyz = cloud(2, 2000, D, dtype, device)
    low = ops.fps(xyz, 64)
    assert torch.equal(low, ops.fps(zero_padded(xyz, 3), 64))
    assert torch.equal(low, ops.fps(zero_padded(xyz, D + 3), 64))


def test_fps_3d_results_unchanged(device):
    for N, m in [(7, 3), (1000, 37), (9000, 150)]:  # brute force and kd-tree paths
        xyz = cloud(2, N, 3, device=device)
        got = ops.fps(xyz, m)
        assert torch.equal(got.cpu(), fps_reference(xyz.cpu(), m))
        assert torch.equal(got, ops.fps(zero_padded(xyz, 4), m))


def test_fps_non_contiguous_and_empty(device):
    xyz = torch.rand(2, 5, 60).transpose(1, 2)
    assert torch.equal(ops.fps(xyz.to(device), 9).cpu(), fps_reference(xyz.contiguous(), 9))
    assert ops.fps(cloud(0, 10, 5, device=device), 4).shape == (0, 4)
    assert ops.fps(cloud(2, 10, 5, device=device), 0).shape == (2, 0)


def test_fps_opcheck(device):
    xyz = torch.rand(2, 50, 7, device=device)
    lengths = torch.tensor([50, 20], device=device)
    start = torch.zeros(2, dtype=torch.long, device=device)
    torch.library.opcheck(torch.ops.recon_fast.fps.default, (xyz, lengths, 8, start, -1.0))


def test_fps_argument_errors(device):
    with pytest.raises(ValueError, match=r"xyz must have points of dimension D >= 1"):
        ops.fps(torch.rand(1, 4, 0, device=device), 2)
    full = torch.tensor([4], device=device)
    with pytest.raises(ValueError, match="xyz must have points of dimension D >= 1"):
        torch.ops.recon_fast.fps(torch.rand(1, 4, 0, device=device), full, 2,
                                 torch.zeros(1, dtype=torch.int64, device=device), -1.0)


# ---------------------------------------------------------------------------------------------
# Every CPU SIMD path


@pytest.fixture(params=["baseline", "avx2", "avx512"])
def capability(request):
    if request.param not in CAPABILITIES:
        pytest.skip(f"this CPU does not support {request.param} (supported: {CAPABILITIES})")
    with recon_fast.use_cpu_capability(request.param):
        yield request.param


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("D", [1, 2, 5, 19])
def test_every_cpu_path_matches_reference(capability, dtype, D):
    q, p = cloud(2, 37, D, dtype), cloud(2, 301, D, dtype)
    got = ops.knn(q, p, 11)
    want_d, want_i = knn_reference(q, p, 11)
    assert torch.equal(got.idx, want_i)
    assert_close(got.dists, want_d, dtype)
    assert torch.equal(ops.fps(p, 40), fps_reference(p, 40))


def test_every_cpu_path_breaks_ties_by_index(capability):
    p = torch.randint(0, 3, (2, 500, 4)).float()
    q = torch.randint(0, 3, (2, 60, 4)).float()
    assert torch.equal(ops.knn(q, p, 30).idx, knn_reference(q, p, 30)[1])
    assert torch.equal(ops.fps(p, 50), fps_reference(p, 50))
