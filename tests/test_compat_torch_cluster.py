"""recon_fast.compat.torch_cluster against restatements of torch_cluster's fps, knn and radius
(flat points with a batch vector, global indices, (2, E) edge lists)."""

import pytest
import torch

from peer_restatement import cluster_fps, cluster_knn, cluster_radius
from recon_fast.compat import torch_cluster as tc


def _batched(sizes, D=3, dtype=torch.float32):
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return torch.rand(int(sum(sizes)), D, dtype=torch.float64).to(dtype), batch


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("D", [3, 2, 1, 6])
@pytest.mark.parametrize("sizes_x,sizes_y,k", [([40], [15], 6), ([30, 0, 25], [10, 5, 7], 4),
                                               ([3, 50], [9, 9], 5)])
def test_knn_matches_torch_cluster(device, dtype, D, sizes_x, sizes_y, k):
    x, bx = _batched(sizes_x, D, dtype)
    y, by = _batched(sizes_y, D, dtype)
    got = tc.knn(x.to(device), y.to(device), k, bx.to(device), by.to(device))
    assert got.dtype == torch.int64 and got.device.type == device.type
    assert torch.equal(got.cpu(), cluster_knn(x, y, k, bx, by))


def test_knn_without_batch_and_cosine(device):
    x, y = torch.randn(60, 3), torch.randn(12, 3)
    assert torch.equal(tc.knn(x.to(device), y.to(device), 7).cpu(), cluster_knn(x, y, 7))
    got = tc.knn(x.to(device), y.to(device), 5, cosine=True).cpu()
    assert torch.equal(got, cluster_knn(x, y, 5, cosine=True))


@pytest.mark.parametrize("loop", [False, True])
@pytest.mark.parametrize("flow", ["source_to_target", "target_to_source"])
def test_knn_graph_matches_torch_cluster(device, loop, flow):
    x, batch = _batched([20, 31])
    got = tc.knn_graph(x.to(device), 4, batch.to(device), loop=loop, flow=flow).cpu()
    pairs = cluster_knn(x, x, 4 if loop else 5, batch, batch)
    row, col = (pairs[1], pairs[0]) if flow == "source_to_target" else (pairs[0], pairs[1])
    if not loop:
        row, col = row[row != col], col[row != col]
    assert torch.equal(got, torch.stack([row, col]))
    assert loop or not bool((got[0] == got[1]).any())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("D", [3, 2, 6])  # radius takes any dimension
@pytest.mark.parametrize("max_num_neighbors", [32, 3])
def test_radius_matches_torch_cluster(device, dtype, D, max_num_neighbors):
    x, bx = _batched([50, 0, 40], D, dtype)
    y, by = _batched([10, 4, 12], D, dtype)
    got = tc.radius(x.to(device), y.to(device), 0.45, bx.to(device), by.to(device),
                    max_num_neighbors=max_num_neighbors)
    assert torch.equal(got.cpu(), cluster_radius(x, y, 0.45, bx, by, max_num_neighbors))


@pytest.mark.parametrize("loop", [False, True])
@pytest.mark.parametrize("flow", ["source_to_target", "target_to_source"])
def test_radius_graph_matches_torch_cluster(device, loop, flow):
    x, batch = _batched([30, 45])
    got = tc.radius_graph(x.to(device), 0.3, batch.to(device), loop=loop, max_num_neighbors=5,
                          flow=flow).cpu()
    pairs = cluster_radius(x, x, 0.3, batch, batch, 5, ignore_same_index=not loop)
    want = torch.stack([pairs[1], pairs[0]]) if flow == "source_to_target" else pairs
    assert torch.equal(got, want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("ratio", [0.5, 0.25, 1.0])
@pytest.mark.parametrize("D", [3, 2, 6])
def test_fps_matches_torch_cluster(device, dtype, ratio, D):
    x, batch = _batched([40, 7, 1, 60], D, dtype=dtype)
    got = tc.fps(x.to(device), batch.to(device), ratio=ratio, random_start=False)
    assert torch.equal(got.cpu(), cluster_fps(x, batch, ratio))


def test_fps_ptr_list_tensor_ratio_and_default_ratio(device):
    x, batch = _batched([20, 13])
    ptr = [0, 20, 33]
    got = tc.fps(x.to(device), ptr=ptr, ratio=0.3, random_start=False).cpu()
    assert torch.equal(got, cluster_fps(x, batch, 0.3))
    got = tc.fps(x.to(device), batch.to(device), ratio=torch.tensor([0.5, 0.5]),
                 random_start=False).cpu()
    assert torch.equal(got, cluster_fps(x, batch, 0.5))
    assert torch.equal(tc.fps(x.to(device), batch.to(device), random_start=False).cpu(),
                       cluster_fps(x, batch, 0.5))


def test_fps_random_start_draws_like_the_cuda_kernel(device):
    x, batch = _batched([25, 40], D=2)
    torch.manual_seed(3)
    got = tc.fps(x.to(device), batch.to(device), ratio=0.2).cpu()
    torch.manual_seed(3)
    start = (torch.rand(2, device=device) * torch.tensor([25.0, 40.0], device=device)).long()
    assert torch.equal(got, cluster_fps(x, batch, 0.2, start=start.cpu()))


def test_empty_inputs_give_empty_edges(device):
    x, y = torch.rand(0, 3, device=device), torch.rand(5, 3, device=device)
    for out in (tc.knn(x, y, 3), tc.knn(y, x, 3), tc.radius(x, y, 0.5), tc.radius(y, x, 0.5)):
        assert out.shape == (2, 0) and out.dtype == torch.int64
    assert tc.fps(x).shape == (0,)


@pytest.mark.parametrize("call, message", [
    (lambda x, b: tc.knn(x, x[:, :2], 3), "same number of features"),
    (lambda x, b: tc.knn(x, x, 0), "k must be in"),
    (lambda x, b: tc.knn_graph(x, 3, b, flow="up"), "flow must be"),
    (lambda x, b: tc.knn(x, x, 3, b.flip(0), b.flip(0)), "must be sorted"),
    (lambda x, b: tc.knn(x, x, 3, b[:4], b), "batch_x must be a"),
    (lambda x, b: tc.knn(x, x, 3, b, None), "both be given"),
    (lambda x, b: tc.radius(x, x, -0.5), "radius must be finite"),
    (lambda x, b: tc.radius(x, x, 0.5, max_num_neighbors=0), "max_num_neighbors must be in"),
    (lambda x, b: tc.fps(x, b, ratio=1.5), r"ratio must lie in \(0, 1\]"),
    (lambda x, b: tc.fps(x, ptr=[0, 3, 99]), "ptr must rise"),
    (lambda x, b: tc.fps(x.long(), b), "src must be float16"),
])
def test_errors_name_the_argument(call, message):
    x, b = _batched([6, 6])
    with pytest.raises(ValueError, match=message):
        call(x, b)
