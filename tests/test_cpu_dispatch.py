"""CPU SIMD paths: every path this CPU supports computes the reference's answer bit for bit, the
path is chosen and reported at run time, and the binary stays portable (wide instructions only
inside the capability-specific kernels)."""

import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

import recon_fast
from conftest import assert_close
from reference import chamfer_reference, fps_reference, knn_reference
from recon_fast import ops

CAPABILITIES = recon_fast.build_info()["cpu_capabilities"]
ALL_NAMES = ["baseline", "avx2", "avx512"]


@pytest.fixture(params=ALL_NAMES)
def capability(request):
    if request.param not in CAPABILITIES:
        pytest.skip(f"this CPU does not support {request.param} (supported: {CAPABILITIES})")
    with recon_fast.use_cpu_capability(request.param):
        yield request.param


DTYPES = [torch.float32, torch.float64, torch.float16]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,m", [(7, 3), (1000, 37), (9000, 150)])  # brute force, kd-tree
def test_fps_every_path_matches_reference(capability, dtype, N, m):
    xyz = torch.randn(2, N, 3, dtype=torch.float64).to(dtype)
    assert torch.equal(ops.fps(xyz, m), fps_reference(xyz, m))


@pytest.mark.parametrize("N", [300, 12000])
def test_fps_every_path_breaks_ties_by_index(capability, N):
    xyz = torch.randint(0, 4, (2, N, 3)).float()
    assert torch.equal(ops.fps(xyz, 100), fps_reference(xyz, 100))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm", [2, 1])
# plain scan, Morton-sorted scan, kd-tree
@pytest.mark.parametrize("M,N,k", [(5, 7, 7), (64, 1024, 32), (100, 5000, 16)])
def test_knn_every_path_matches_reference(capability, dtype, norm, M, N, k):
    q = torch.randn(2, M, 3, dtype=torch.float64).to(dtype)
    p = torch.randn(2, N, 3, dtype=torch.float64).to(dtype)
    got = ops.knn(q, p, k, norm=norm)
    want_d, want_i = knn_reference(q, p, k, norm=norm)
    assert torch.equal(got.idx, want_i)
    assert_close(got.dists, want_d, dtype)


@pytest.mark.parametrize("N", [500, 9000])
def test_knn_every_path_breaks_ties_by_index(capability, N):
    p = torch.randint(0, 3, (2, N, 3)).float()
    q = torch.randint(0, 3, (2, 80, 3)).float()
    assert torch.equal(ops.knn(q, p, 40).idx, knn_reference(q, p, 40)[1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm", [2, 1])
@pytest.mark.parametrize("N,M", [(1, 1), (32, 32), (5, 70), (57, 29), (600, 300)])
def test_chamfer_every_path_matches_reference(capability, dtype, norm, N, M):
    x = torch.randn(3, N, 3, dtype=torch.float64).to(dtype)
    y = torch.randn(3, M, 3, dtype=torch.float64).to(dtype)
    got = ops.chamfer(x, y, norm=norm)
    want = chamfer_reference(x, y, norm=norm)
    assert torch.equal(got.idx_xy, want[2]) and torch.equal(got.idx_yx, want[3])
    assert_close(got.dist_xy, want[0], dtype)
    assert_close(got.dist_yx, want[1], dtype)


def test_chamfer_every_path_large_pair_with_ties(capability):
    # 4100^2 pairs: above every path's brute-force reach, so the kd-tree path runs; an integer
    # grid makes most nearest distances ties.
    x = torch.randint(0, 12, (1, 4100, 3)).float()
    y = torch.randint(0, 12, (1, 4101, 3)).float() + 0.5 * (torch.rand(1, 4101, 1) < 0.5)
    got = ops.chamfer(x, y)
    want = chamfer_reference(x, y)
    assert torch.equal(got.idx_xy, want[2]) and torch.equal(got.idx_yx, want[3])
    assert torch.equal(got.dist_xy, want[0]) and torch.equal(got.dist_yx, want[1])


def test_ragged_clouds_every_path(capability):
    x, y = torch.rand(4, 40, 3), torch.rand(4, 33, 3)
    xl, yl = torch.tensor([40, 5, 0, 17]), torch.tensor([33, 33, 7, 0])
    got = ops.chamfer(x, y, x_lengths=xl, y_lengths=yl)
    want = chamfer_reference(x, y, xl, yl)
    assert torch.equal(got.idx_xy, want[2]) and torch.equal(got.idx_yx, want[3])
    idx = ops.fps(x, 5, lengths=xl)
    assert torch.equal(idx, fps_reference(x, 5, lengths=xl))


def test_knn_every_path_ragged_kd_tree_clouds(capability):
    # Clouds and query sets of different lengths in the kd-tree path (which searches the queries
    # in a spatial order of its own): padded queries stay -1, the rest match the reference.
    q, p = torch.rand(2, 100, 3), torch.rand(2, 5000, 3)
    ql, pl = torch.tensor([100, 70]), torch.tensor([4500, 5000])
    got = ops.knn(q, p, 10, ql, pl)
    want_d, want_i = knn_reference(q, p, 10, ql, pl)
    assert torch.equal(got.idx, want_i)
    assert torch.equal(got.dists, want_d)
    assert (got.idx[1, 70:] == -1).all()


def test_results_do_not_depend_on_thread_count():
    x = torch.rand(33, 3000, 3)
    threads = torch.get_num_threads()
    try:
        outs = []
        for n in (1, max(2, threads)):
            torch.set_num_threads(n)
            outs.append((ops.fps(x, 50), ops.knn(x[:, :70], x, 9).idx,
                         ops.chamfer(x[:, :500], x[:, 500:1300]).idx_yx))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*outs):
        assert torch.equal(a, b)


def test_one_large_cloud_on_one_and_two_threads():
    # One cloud large enough for the kd-tree's parallel build (and the multi-threaded FPS steps);
    # an integer grid makes most distances ties, which must still go to the lowest index.
    g = torch.Generator().manual_seed(5)
    x = torch.randint(0, 40, (1, 20000, 3), generator=g).float()
    q = torch.randint(0, 40, (1, 90, 3), generator=g).float() + 0.5
    want_fps = fps_reference(x, 300)
    want_knn = knn_reference(q, x, 12)[1]
    threads = torch.get_num_threads()
    try:
        for n in (1, max(2, threads)):
            torch.set_num_threads(n)
            assert torch.equal(ops.fps(x, 300), want_fps)
            assert torch.equal(ops.knn(q, x, 12).idx, want_knn)
    finally:
        torch.set_num_threads(threads)


def test_build_info_reports_the_path_in_use():
    info = recon_fast.build_info()
    assert info["cpu_capabilities"][0] == "baseline"
    assert set(info["cpu_capabilities"]) <= set(ALL_NAMES)
    assert info["cpu_capability"] in info["cpu_capabilities"]
    assert info["cpu_capability"] == recon_fast.cpu_capability()
    with recon_fast.use_cpu_capability("baseline"):
        assert recon_fast.build_info()["cpu_capability"] == "baseline"
    assert recon_fast.cpu_capability() == info["cpu_capability"]


def test_default_is_the_widest_supported_path():
    code = "import recon_fast; print(recon_fast.cpu_capability())"
    env = {k: v for k, v in os.environ.items() if k != "RECON_FAST_CPU_CAPABILITY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == CAPABILITIES[-1]


def test_unknown_capability_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown CPU capability 'avx9'"):
        recon_fast.set_cpu_capability("avx9")


def test_unsupported_capability_is_a_clear_error():
    missing = [c for c in ALL_NAMES if c not in CAPABILITIES]
    if not missing:
        pytest.skip("this CPU supports every path")
    with pytest.raises(ValueError, match=f"does not support '{missing[-1]}'"):
        recon_fast.set_cpu_capability(missing[-1])


@pytest.mark.parametrize("value,ok", [("baseline", True), ("avx9", False)])
def test_environment_variable_forces_a_path(value, ok):
    code = "import recon_fast; print(recon_fast.build_info()['cpu_capability'])"
    env = dict(os.environ, RECON_FAST_CPU_CAPABILITY=value)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    if ok:
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == value
    else:
        assert out.returncode != 0
        assert "RECON_FAST_CPU_CAPABILITY='avx9'" in out.stderr
        assert "ValueError" in out.stderr


def _functions_using(disassembly: str, register: str) -> set[str]:
    """Demangled names of the functions whose code mentions %<register>N."""
    names, current = set(), None
    pattern = re.compile(rf"%{register}\d")
    for line in disassembly.splitlines():
        if line.endswith(">:"):
            current = line[line.index("<") + 1:-2]
        elif current is not None and pattern.search(line):
            names.add(current)
    return names


@pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump (binutils) is not installed")
def test_wide_instructions_only_inside_capability_kernels():
    """A default build must run on any x86-64 CPU: AVX (ymm) and AVX-512 (zmm) registers may
    appear only in functions of the recon_fast::avx2 / recon_fast::avx512 kernels. A wide copy
    of a shared inline function (say std::vector<float>::assign) would be an illegal instruction
    waiting for the first AVX2-only or SSE-only machine."""
    info = recon_fast.build_info()
    if info["cpu_native"]:
        pytest.skip("built with RECON_FAST_NATIVE=1: tuned for the build machine on purpose")
    if "avx2" not in CAPABILITIES and not re.search(r"x86|amd64", os.uname().machine, re.I):
        pytest.skip("not an x86-64 build")
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-C", recon_fast._C.__file__],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    ymm = _functions_using(out.stdout, "ymm")
    zmm = _functions_using(out.stdout, "zmm")
    wide_ok = ("recon_fast::avx2::", "recon_fast::avx512::")
    leaks = sorted(f for f in ymm | zmm if not any(ns in f for ns in wide_ok))
    assert not leaks, f"wide registers outside the capability kernels: {leaks[:10]}"
    assert not [f for f in zmm if "recon_fast::avx2::" in f], "AVX-512 code in the AVX2 kernels"
    # And the wide kernels are really there.
    assert any("recon_fast::avx512::" in f for f in zmm)
    assert any("recon_fast::avx2::" in f for f in ymm)
