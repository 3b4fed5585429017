"""Farthest point sampling: recon_fast vs the per-iteration torch loop (and peers if installed)."""

import pytest
import torch

from harness import OURS, REFERENCE, cached, cases, optional_import, record
from reference import fps_torch_loop
from recon_fast import ops
from targets import gpu_target

# (name, B, N, m, target speed-up over the loop). Targets: the project's issue for CPU,
# targets.py for the GPU.
CPU = [("B128-N1024-m64", 128, 1024, 64, 10), ("B32-N2048-m128", 32, 2048, 128, 10),
       ("B1-N100k-m4096", 1, 100_000, 4096, 40)]
GPU = [(name, B, N, m, gpu_target("fps", name)) for name, B, N, m in [
    ("B128-N1024-m64", 128, 1024, 64), ("B32-N2048-m128", 32, 2048, 128),
    ("B32-N8192-m512", 32, 8192, 512), ("B1-N100k-m4096", 1, 100_000, 4096)]]
PARAMS = cases(CPU, GPU)


def _inputs(device, case):
    name, B, N, m, target = case
    xyz = cached(("fps-xyz", device, name), lambda: torch.rand(B, N, 3, device=device))
    expected = cached(("fps-ref", device, name), lambda: fps_torch_loop(xyz, m))
    return xyz, m, expected, target


def _rounds(device, case, slow):
    name, B, N, m, _ = case
    if slow and device == "cpu" and N * m > 10**8:
        return 1
    return 3 if slow else 20


@pytest.mark.parametrize("device,case", PARAMS)
def test_fps_recon_fast(benchmark, device, case):
    xyz, m, expected, target = _inputs(device, case)
    assert torch.equal(ops.fps(xyz, m), expected), "parity with the torch loop failed"
    record(benchmark, lambda: ops.fps(xyz, m), op="fps", case=case[0], dtype=xyz.dtype,
           device=xyz.device, provider=OURS, rounds=_rounds(device, case, False), target=target)


@pytest.mark.parametrize("device,case", PARAMS)
def test_fps_reference(benchmark, device, case):
    xyz, m, _, _ = _inputs(device, case)
    record(benchmark, lambda: fps_torch_loop(xyz, m), op="fps", case=case[0], dtype=xyz.dtype,
           device=xyz.device, provider=REFERENCE, rounds=_rounds(device, case, True))


@pytest.mark.parametrize("device,case", PARAMS)
def test_fps_pytorch3d(benchmark, device, case):
    p3d = optional_import("pytorch3d.ops")
    if p3d is None:
        pytest.skip("pytorch3d is not installed")
    xyz, m, expected, _ = _inputs(device, case)
    _, idx = p3d.sample_farthest_points(xyz, K=m)
    assert torch.equal(idx, expected), "pytorch3d disagrees with the torch loop"
    record(benchmark, lambda: p3d.sample_farthest_points(xyz, K=m), op="fps", case=case[0],
           dtype=xyz.dtype, device=xyz.device, provider="pytorch3d", rounds=_rounds(device, case, True))


@pytest.mark.parametrize("device,case", PARAMS)
def test_fps_pointnet2_ops(benchmark, device, case):
    p2 = optional_import("pointnet2_ops.pointnet2_utils")
    if p2 is None or device != "cuda":
        pytest.skip("pointnet2_ops is not installed (CUDA only)")
    xyz, m, _, _ = _inputs(device, case)
    record(benchmark, lambda: p2.furthest_point_sample(xyz, m), op="fps", case=case[0],
           dtype=xyz.dtype, device=xyz.device, provider="pointnet2_ops", rounds=_rounds(device, case, False))
