"""ReCon's Group (FPS + kNN + gather): recon_fast vs the reference code's torch formulation."""

import pytest
import torch

from harness import OURS, REFERENCE, cached, cases, record
from reference import fps_torch_loop, gather_points_reference, knn_matmul_topk
from recon_fast import ops

# (name, B, N, G, K): pretraining and ScanObjectNN finetuning shapes.
CPU = [("B128-N1024-G64-K32", 128, 1024, 64, 32)]
GPU = [("B128-N1024-G64-K32", 128, 1024, 64, 32), ("B32-N2048-G128-K32", 32, 2048, 128, 32)]
PARAMS = cases(CPU, GPU)


def torch_group(xyz, G, K):
    """Group as plain torch: FPS loop, matmul+topk kNN, gather, centre subtraction."""
    center = gather_points_reference(xyz, fps_torch_loop(xyz, G))
    _, idx = knn_matmul_topk(center, xyz, K)
    return gather_points_reference(xyz, idx) - center[:, :, None], center


def _inputs(device, case):
    name, B, N, G, K = case
    # Shift away from the origin so pointnet2's near-origin rule and the plain loop agree.
    xyz = cached(("g-xyz", device, name), lambda: torch.rand(B, N, 3, device=device) + 1)
    return xyz, G, K


@pytest.mark.parametrize("device,case", PARAMS)
def test_group_recon_fast(benchmark, device, case):
    xyz, G, K = _inputs(device, case)
    nb, center = ops.group(xyz, G, K)
    ref_nb, ref_center = cached(("g-ref", device, case[0]), lambda: torch_group(xyz, G, K))
    assert torch.equal(center, ref_center)
    # topk order is unspecified: compare each patch as a sorted set of squared radii.
    torch.testing.assert_close((nb ** 2).sum(-1).sort(-1).values, (ref_nb ** 2).sum(-1).sort(-1).values,
                               atol=1e-5, rtol=1e-4)
    record(benchmark, lambda: ops.group(xyz, G, K), op="group", case=case[0], dtype=xyz.dtype,
           device=xyz.device, provider=OURS, rounds=10)


@pytest.mark.parametrize("device,case", PARAMS)
def test_group_reference(benchmark, device, case):
    xyz, G, K = _inputs(device, case)
    record(benchmark, lambda: torch_group(xyz, G, K), op="group", case=case[0], dtype=xyz.dtype,
           device=xyz.device, provider=REFERENCE, rounds=3)
