"""Ball query: recon_fast vs a dense distance matrix + topk of the inside indices (PyTorch)."""

import pytest
import torch

from harness import OURS, REFERENCE, cached, cases, optional_import, record
from reference import ball_query_dense
from recon_fast import ops

# (name, B, N, M, k, radius): PointNet++ SSG's first two set abstractions, and a larger cloud.
CPU = [("B16-N1024-M512-k32-r0.2", 16, 1024, 512, 32, 0.2),
       ("B16-N512-M128-k64-r0.4", 16, 512, 128, 64, 0.4),
       ("B4-N8192-M1024-k32-r0.1", 4, 8192, 1024, 32, 0.1)]
GPU = CPU + [("B32-N8192-M2048-k32-r0.1", 32, 8192, 2048, 32, 0.1)]
PARAMS = cases(CPU, GPU)


def _inputs(device, case):
    name, B, N, M, k, radius = case
    points = cached(("ball-query-p", device, name), lambda: torch.rand(B, N, 3, device=device))
    return points, points[:, :M], k, radius  # centres are cloud points, as FPS picks them


@pytest.mark.parametrize("device,case", PARAMS)
def test_ball_query_recon_fast(benchmark, device, case):
    points, query, k, radius = _inputs(device, case)
    got = ops.ball_query(query, points, k, radius)
    _, want_idx = cached(("ball-query-ref", device, case[0]),
                         lambda: ball_query_dense(query, points, k, radius))
    assert torch.equal(got.idx, want_idx)  # same summation order: the same points inside
    record(benchmark, lambda: ops.ball_query(query, points, k, radius), op="ball_query",
           case=case[0], dtype=points.dtype, device=points.device, provider=OURS, rounds=5)


@pytest.mark.parametrize("device,case", PARAMS)
def test_ball_query_reference(benchmark, device, case):
    points, query, k, radius = _inputs(device, case)
    record(benchmark, lambda: ball_query_dense(query, points, k, radius), op="ball_query",
           case=case[0], dtype=points.dtype, device=points.device, provider=REFERENCE, rounds=3)


@pytest.mark.parametrize("device,case", PARAMS)
def test_ball_query_pytorch3d(benchmark, device, case):
    p3d = optional_import("pytorch3d.ops")
    if p3d is None:
        pytest.skip("pytorch3d is not installed")
    points, query, k, radius = _inputs(device, case)
    record(benchmark, lambda: p3d.ball_query(query, points, K=k, radius=radius, return_nn=False),
           op="ball_query", case=case[0], dtype=points.dtype, device=points.device,
           provider="pytorch3d", rounds=5)
