"""ReCon's Group (FPS + kNN + gather): recon_fast vs the reference code's torch formulation.

Also: the host reads (blocking device-to-host syncs on CUDA) and CPU time of one ``ops.group``
call with the data checks on, against the same grouping composed of the public ops (fps,
gather_points, knn, gather_points), which is how ``ops.group`` ran before it validated once at
its boundary: every public op re-checked its inputs.
"""

import contextlib
import time

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


@contextlib.contextmanager
def count_host_reads():
    """Counts the Tensor methods that read a value back to the host (each a sync on CUDA)."""
    counts = {"n": 0}
    names = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__")
    saved = {name: getattr(torch.Tensor, name) for name in names}

    def counting(original):
        def read(self, *args, **kwargs):
            counts["n"] += 1
            return original(self, *args, **kwargs)
        return read

    for name, original in saved.items():
        setattr(torch.Tensor, name, counting(original))
    try:
        yield counts
    finally:
        for name, original in saved.items():
            setattr(torch.Tensor, name, original)


def group_from_public_ops(xyz, G, K):
    """The grouping as four public, self-validating op calls."""
    center = ops.gather_points(xyz, ops.fps(xyz, G, min_norm_sq=ops.POINTNET2_MIN_NORM_SQ))
    patch_idx = ops.knn(center.detach(), xyz, K).idx
    return ops.gather_points(xyz, patch_idx) - center.unsqueeze(2), center


def _cpu_ms(fn, repeats=20):
    fn()
    start = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - start) / repeats * 1e3


@pytest.mark.parametrize("device", ["cpu"])
def test_group_host_reads(device):
    """Host reads and CPU time per call with data checks on, small clouds (launch-bound)."""
    xyz = torch.rand(8, 256, 3, device=device) + 1
    rows = {}
    with ops.checks(data=True):
        for name, fn in (("public ops (before)", lambda: group_from_public_ops(xyz, 16, 8)),
                         ("ops.group (after)", lambda: ops.group(xyz, 16, 8))):
            with count_host_reads() as reads:
                out = fn()
            rows[name] = (reads["n"], _cpu_ms(fn))
            print(f"group B8-N256-G16-K8 {name}: {reads['n']} host reads, "
                  f"{rows[name][1]:.3f} ms CPU per call")
        before, after = group_from_public_ops(xyz, 16, 8), ops.group(xyz, 16, 8)
    assert torch.equal(before[1], after.center) and torch.equal(before[0], after.neighborhood)
    assert rows["ops.group (after)"][0] < rows["public ops (before)"][0]


@pytest.mark.parametrize("device,case", PARAMS)
def test_group_reference(benchmark, device, case):
    xyz, G, K = _inputs(device, case)
    record(benchmark, lambda: torch_group(xyz, G, K), op="group", case=case[0], dtype=xyz.dtype,
           device=xyz.device, provider=REFERENCE, rounds=3)
