"""recon_fast.compat.knn_cuda.KNN against a restatement of KNN_CUDA's kNN."""

import pytest
import torch

from conftest import assert_close
from peer_restatement import knn_cuda_knn
from recon_fast.compat.knn_cuda import KNN, knn


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("D", [3, 2, 1, 5, 64])  # the original takes any D
@pytest.mark.parametrize("N,M,k", [(100, 100, 10), (1000, 50, 32), (11, 11, 2), (7, 3, 7)])
def test_transpose_mode_matches_knn_cuda(device, dtype, D, N, M, k):
    ref = torch.rand(2, N, D, dtype=torch.float64).to(dtype)
    query = torch.rand(2, M, D, dtype=torch.float64).to(dtype)
    dist, idx = KNN(k, transpose_mode=True)(ref.to(device), query.to(device))
    want_d, want_i = knn_cuda_knn(ref, query, k)
    assert dist.shape == (2, M, k) and idx.dtype == torch.int64
    assert dist.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert torch.equal(idx.cpu(), want_i)
    assert_close(dist.cpu(), want_d.to(dist.dtype))


def test_channels_first_mode_and_point_mae_usage(device):
    # Point-MAE's Group: KNN(k=group_size, transpose_mode=True); _, idx = knn(xyz, center).
    xyz = torch.rand(3, 256, 3, device=device)
    center = xyz[:, :16]
    _, idx = KNN(k=32, transpose_mode=True)(xyz, center)
    assert idx.shape == (3, 16, 32)
    assert torch.equal(idx[..., 0].cpu(), torch.arange(16).expand(3, 16))  # each centre itself
    dist_cf, idx_cf = KNN(8)(xyz.transpose(1, 2), center.transpose(1, 2))  # (B, D, points)
    want_d, want_i = knn_cuda_knn(xyz.cpu(), center.cpu(), 8)
    assert idx_cf.shape == (3, 8, 16)
    assert torch.equal(idx_cf.cpu(), want_i.transpose(1, 2))
    assert_close(dist_cf.cpu(), want_d.transpose(1, 2))


def test_no_gradient_and_non_contiguous(device):
    ref = torch.rand(2, 3, 40, device=device).transpose(1, 2).requires_grad_()
    dist, idx = KNN(4, transpose_mode=True)(ref, ref[:, :5])
    assert not dist.requires_grad and not idx.requires_grad
    assert torch.equal(idx.cpu(), knn_cuda_knn(ref.detach().cpu(), ref.detach()[:, :5].cpu(), 4)[1])


def test_module_level_knn_takes_one_cloud_channels_first(device):
    ref, query = torch.rand(3, 50, device=device), torch.rand(3, 9, device=device)
    dist, idx = knn(ref, query, 5)
    want_d, want_i = knn_cuda_knn(ref.t()[None].cpu(), query.t()[None].cpu(), 5)
    assert torch.equal(idx.cpu(), want_i[0].t())
    assert_close(dist.cpu(), want_d[0].t())


def test_ties_go_to_the_lowest_index(device):
    ref = torch.randint(0, 3, (1, 300, 3)).float()
    query = torch.randint(0, 3, (1, 20, 3)).float()
    _, idx = KNN(30, transpose_mode=True)(ref.to(device), query.to(device))
    assert torch.equal(idx.cpu(), knn_cuda_knn(ref, query, 30)[1])


@pytest.mark.parametrize("call, message", [
    (lambda r, q: KNN(4, True)(r, q[:1]), "same batch size"),
    (lambda r, q: KNN(99, True)(r, q), "k must be in"),
    (lambda r, q: KNN(4, True)(r[0], q), "ref must have shape"),
    (lambda r, q: KNN(4, True)(r, q[..., :2]), "same point dimension"),
    (lambda r, q: KNN(4, True)(r.long(), q), "ref must be float16"),
])
def test_errors_name_the_argument(call, message):
    ref, query = torch.rand(2, 20, 3), torch.rand(2, 6, 3)
    with pytest.raises(ValueError, match=message):
        call(ref, query)
