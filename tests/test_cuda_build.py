"""The CUDA kernels: registration (checked on any machine with a CUDA build) and the GPU code
paths that the per-op parity tests do not reach with their sizes (large k, clouds too big for
registers, out-of-range lengths). The per-op parity tests run on the GPU through the `device`
fixture as well."""

import pytest
import torch

from reference import fps_reference, knn_reference
import recon_fast
from recon_fast import ops

OPS = ["fps", "knn", "knn_backward", "gather_points", "gather_points_backward", "chamfer",
       "chamfer_backward", "ball_query", "ball_query_backward"]

CUDA_BUILD = recon_fast.build_info()["cuda"]
_skip_without_cuda_build = pytest.mark.skipif(
    not CUDA_BUILD, reason="recon_fast was built without CUDA kernels (CPU-only build)")


def needs_cuda_build(test):
    """Skipped in a CPU-only build; marked `cuda_build` so that the GPU check selects it."""
    return pytest.mark.cuda_build(_skip_without_cuda_build(test))


def test_build_info_reports_cuda_flag():
    # The flag must tell the truth about the registered kernels (and the documented keys exist).
    assert {"cuda", "openmp", "cpu_simd"} <= set(recon_fast.build_info())
    for op in OPS:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"recon_fast::{op}", "CUDA") == \
            CUDA_BUILD, op


@pytest.mark.skipif(CUDA_BUILD, reason="the message is for CPU-only builds")
def test_cpu_only_build_names_the_missing_cuda_kernels():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():  # a CUDA tensor without a GPU: metadata only
        xyz = torch.empty(2, 16, 3, device="cuda")
        with pytest.raises(recon_fast.errors.NotCompiledError,
                           match="xyz is on cuda.*built without CUDA kernels: rebuild with nvcc"):
            ops.fps(xyz, 4)


@pytest.mark.parametrize("op", OPS)
def test_every_op_has_a_cpu_kernel(op):
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"recon_fast::{op}", "CPU")


@needs_cuda_build
@pytest.mark.parametrize("op", OPS)
def test_every_op_has_a_cuda_kernel(op):
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"recon_fast::{op}", "CUDA"), (
        f"recon_fast::{op} has no CUDA kernel although the extension reports a CUDA build")


@pytest.mark.cuda
@pytest.mark.parametrize("k", [33, 100, 150])  # two- and four-register warp lists, generic list
def test_knn_large_k_on_gpu(k):
    q, p = torch.randn(2, 37, 3), torch.randn(2, 300, 3)
    pl = torch.tensor([300, 120])  # fewer points than k in the second cloud: -1 padding
    got = ops.knn(q.cuda(), p.cuda(), k, point_lengths=pl.cuda())
    want_d, want_i = knn_reference(q, p, k, point_lengths=pl)
    assert torch.equal(got.idx.cpu(), want_i)
    assert torch.equal(got.dists.cpu(), want_d)


@pytest.mark.cuda
@pytest.mark.parametrize("k", [40, 150])
def test_knn_large_k_ties_on_gpu(k):
    p = torch.randint(0, 3, (2, 400, 3)).float()
    q = torch.randint(0, 3, (2, 20, 3)).float()
    assert torch.equal(ops.knn(q.cuda(), p.cuda(), k).idx.cpu(), knn_reference(q, p, k)[1])


@pytest.mark.cuda
def test_fps_many_large_clouds_use_the_scratch_path():
    # More clouds than resident blocks and clouds too big for registers: running minima in
    # global memory, one block per cloud.
    xyz = torch.randint(0, 50, (160, 8300, 3)).float()  # integer grid: exact ties
    got = ops.fps(xyz.cuda(), 6).cpu()
    assert torch.equal(got, fps_reference(xyz, 6))


@pytest.mark.slow
@pytest.mark.cuda
def test_fps_one_huge_cloud_spreads_over_blocks():
    # One cloud too big for all blocks' registers: global scratch split over a cooperative grid.
    xyz = torch.rand(1, 2_500_000, 3)
    xyz[0, 1::5] *= 1e-2  # some points near the origin
    got = ops.fps(xyz.cuda(), 5, min_norm_sq=ops.POINTNET2_MIN_NORM_SQ).cpu()
    assert torch.equal(got, fps_reference(xyz, 5, min_norm_sq=1e-3))


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_fps_scratch_path_over_a_cooperative_grid_with_ragged_clouds(dtype):
    # A few clouds too big for the blocks' registers (B * blocks needed > resident blocks on
    # A100/H100-class GPUs): running minima in global scratch, each cloud spread over several
    # blocks of one cooperative grid. The short and empty clouds finish first and their blocks
    # keep taking part in every grid barrier.
    xyz = torch.rand(4, 300_000, 3, dtype=torch.float64)
    xyz[:, 1::7] *= 1e-2  # near the origin: never chosen with the pointnet2 threshold
    xyz = xyz.to(dtype)
    lengths = torch.tensor([300_000, 100_001, 1, 0])
    got = ops.fps(xyz.cuda(), 8, lengths.cuda(), min_norm_sq=ops.POINTNET2_MIN_NORM_SQ).cpu()
    assert torch.equal(got, fps_reference(xyz, 8, lengths, min_norm_sq=1e-3))


@pytest.mark.cuda
def test_fps_no_eligible_point_gives_index_zero_on_gpu():
    xyz = torch.rand(2, 9000, 3) * 1e-3  # every |p|^2 <= 1e-3
    xyz[1, :100] = 0.0
    got = ops.fps(xyz.cuda(), 4, min_norm_sq=ops.POINTNET2_MIN_NORM_SQ).cpu()
    assert torch.equal(got, torch.zeros(2, 4, dtype=torch.long))


@pytest.mark.cuda
def test_raw_ops_clamp_out_of_range_lengths_on_gpu():
    # The GPU kernels do not read lengths on the host (that would synchronise); a length beyond
    # N must act like N, and a negative one like 0, instead of reading out of bounds.
    def lengths(*values):
        return torch.tensor(values, device="cuda")

    q, p = torch.rand(2, 10, 3, device="cuda"), torch.rand(2, 30, 3, device="cuda")
    got = torch.ops.recon_fast.knn(q, p, lengths(10, 99), lengths(99, -3), 4, 2)
    want = torch.ops.recon_fast.knn(q, p, lengths(10, 10), lengths(30, 0), 4, 2)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    got = torch.ops.recon_fast.chamfer(q, p, lengths(99, 10), lengths(40, 15), 2)
    want = torch.ops.recon_fast.chamfer(q, p, lengths(10, 10), lengths(30, 15), 2)
    for g, w in zip(got, want):
        assert torch.equal(g, w)
    start = torch.zeros(2, dtype=torch.long, device="cuda")
    got = torch.ops.recon_fast.fps(p, lengths(15, 40), 12, start, -1.0)
    want = torch.ops.recon_fast.fps(p, lengths(15, 30), 12, start, -1.0)
    assert torch.equal(got, want)


@pytest.mark.cuda
def test_gather_points_backward_skips_out_of_range_indices_on_gpu():
    grad = torch.ones(1, 3, 2, device="cuda")
    idx = torch.tensor([[0, 7, -5]], device="cuda")  # 7 and -5 are outside [0, 4)
    out = torch.ops.recon_fast.gather_points_backward(grad, idx, 4)
    want = torch.zeros(1, 4, 2, device="cuda")
    want[0, 0] = 1.0
    assert torch.equal(out, want)
