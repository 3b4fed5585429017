"""k nearest neighbours: recon_fast vs cdist+topk (CPU) / matmul+topk, the reference code's kNN (GPU)."""

import pytest
import torch

from harness import OURS, REFERENCE, cached, cases, optional_import, record
from reference import knn_cdist_topk, knn_matmul_topk
from recon_fast import ops
from targets import gpu_target

# (name, B, N, M, k, reference chunk (None = one matrix), target speed-up)
CPU = [("B128-N1024-M64-k32", 128, 1024, 64, 32, None, 5),
       ("B4-N50k-M4096-k16", 4, 50_000, 4096, 16, 512, 50)]
GPU = [(name, B, N, M, k, None, gpu_target("knn", name)) for name, B, N, M, k in [
    ("B128-N1024-M64-k32", 128, 1024, 64, 32), ("B32-N2048-M128-k32", 32, 2048, 128, 32),
    ("B32-N8192-M512-k32", 32, 8192, 512, 32), ("B4-N50k-M4096-k16", 4, 50_000, 4096, 16)]]
PARAMS = cases(CPU, GPU)


def _inputs(device, case):
    name, B, N, M, k, chunk, target = case
    points = cached(("knn-p", device, name), lambda: torch.rand(B, N, 3, device=device))
    query = points[:, :M]  # queries are cloud points, as FPS centres are
    return points, query, k, chunk, target


def _reference(device, case):
    points, query, k, chunk, _ = _inputs(device, case)
    if device == "cpu":
        return lambda: knn_cdist_topk(query, points, k, chunk=chunk)
    return lambda: knn_matmul_topk(query, points, k)


@pytest.mark.parametrize("device,case", PARAMS)
def test_knn_recon_fast(benchmark, device, case):
    points, query, k, chunk, target = _inputs(device, case)
    got = ops.knn(query, points, k)
    ref_d, _ = cached(("knn-ref", device, case[0]), _reference(device, case))
    # The reference's distances are computed differently (cdist / expanded matmul): compare the
    # sorted k-nearest distances with a tolerance instead of bit-exact indices.
    torch.testing.assert_close(got.dists, ref_d.sort(dim=-1).values, atol=1e-4, rtol=1e-3)
    record(benchmark, lambda: ops.knn(query, points, k), op="knn", case=case[0], dtype=points.dtype,
           device=points.device, provider=OURS, rounds=10, target=target)


@pytest.mark.parametrize("device,case", PARAMS)
def test_knn_reference(benchmark, device, case):
    points, _, _, _, _ = _inputs(device, case)
    slow = device == "cpu" and case[2] > 10_000
    record(benchmark, _reference(device, case), op="knn", case=case[0], dtype=points.dtype,
           device=points.device, provider=REFERENCE, rounds=1 if slow else 5)


@pytest.mark.parametrize("device,case", PARAMS)
def test_knn_pytorch3d(benchmark, device, case):
    p3d = optional_import("pytorch3d.ops")
    if p3d is None:
        pytest.skip("pytorch3d is not installed")
    points, query, k, _, _ = _inputs(device, case)
    record(benchmark, lambda: p3d.knn_points(query, points, K=k), op="knn", case=case[0],
           dtype=points.dtype, device=points.device, provider="pytorch3d", rounds=5)
