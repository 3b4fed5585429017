"""Chamfer L2 loss forward + backward: recon_fast vs cdist + min (and peers if installed)."""

import pytest
import torch

from harness import OURS, REFERENCE, cached, cases, optional_import, record
from reference import chamfer_cdist_min
from recon_fast import ops
from targets import gpu_target

# (name, pairs, N, M, target speed-up). 4864 pairs of 32x32 = 128 clouds x 38 masked patches,
# ReCon's reconstruction loss at batch 128.
CPU = [("4864x32x32", 4864, 32, 32, 3), ("32x2048x2048", 32, 2048, 2048, 40)]
GPU = [(name, B, N, M, gpu_target("chamfer_l2 fwd+bwd", name)) for name, B, N, M in [
    ("4864x32x32", 4864, 32, 32), ("32x2048x2048", 32, 2048, 2048), ("8x8192x8192", 8, 8192, 8192)]]
PARAMS = cases(CPU, GPU)


def _inputs(device, case):
    name, B, N, M, target = case
    x = cached(("ch-x", device, name), lambda: torch.rand(B, N, 3, device=device))
    y = cached(("ch-y", device, name), lambda: torch.rand(B, M, 3, device=device))
    return x, y, target


def _fwd_bwd(loss_fn, x, y):
    xg, yg = x.clone().requires_grad_(), y.clone().requires_grad_()

    def run():
        xg.grad = yg.grad = None
        loss = loss_fn(xg, yg)
        loss.backward()
        return loss, xg.grad, yg.grad

    return run


@pytest.mark.parametrize("device,case", PARAMS)
def test_chamfer_recon_fast(benchmark, device, case):
    x, y, target = _inputs(device, case)
    ours = _fwd_bwd(lambda a, b: ops.chamfer_distance(a, b), x, y)
    ref = cached(("ch-ref", device, case[0]), _fwd_bwd(chamfer_cdist_min, x, y))
    for got, want in zip(ours(), ref):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-3)
    record(benchmark, ours, op="chamfer_l2 fwd+bwd", case=case[0], dtype=x.dtype, device=x.device,
           provider=OURS, rounds=10, target=target)


@pytest.mark.parametrize("device,case", PARAMS)
def test_chamfer_reference(benchmark, device, case):
    x, y, _ = _inputs(device, case)
    slow = device == "cpu" and case[2] >= 1024
    record(benchmark, _fwd_bwd(chamfer_cdist_min, x, y), op="chamfer_l2 fwd+bwd", case=case[0],
           dtype=x.dtype, device=x.device, provider=REFERENCE, rounds=2 if slow else 5)


@pytest.mark.parametrize("device,case", PARAMS)
def test_chamfer_pytorch3d(benchmark, device, case):
    loss = optional_import("pytorch3d.loss")
    if loss is None:
        pytest.skip("pytorch3d is not installed")
    x, y, _ = _inputs(device, case)
    record(benchmark, _fwd_bwd(lambda a, b: loss.chamfer_distance(a, b)[0], x, y),
           op="chamfer_l2 fwd+bwd", case=case[0], dtype=x.dtype, device=x.device,
           provider="pytorch3d", rounds=5)


@pytest.mark.parametrize("device,case", PARAMS)
def test_chamfer_recon_fast_unfused(benchmark, device, case):
    """The chamfer op + torch reductions (what chamfer_distance runs when the fused loss op does
    not apply), to show what fusing the loss gains on many small pairs."""
    x, y, _ = _inputs(device, case)
    lengths = [torch.full((t.shape[0],), t.shape[1], device=device) for t in (x, y)]
    unfused = _fwd_bwd(lambda a, b: ops.chamfer_distance(a, b, *lengths), x, y)
    record(benchmark, unfused, op="chamfer_l2 fwd+bwd", case=case[0], dtype=x.dtype, device=x.device,
           provider="recon_fast chamfer op + torch mean", rounds=10)
