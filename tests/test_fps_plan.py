"""The CUDA FPS launch plan's host arithmetic (csrc/fps/fps_plan.h): a cooperative grid sized to
the cloud, not the largest one that fits. Compiled with the host C++ compiler, no GPU needed; the
GPU side is timed by bench/bench_fps.py (B1 N100k m4096)."""

import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THREADS, REG_POINTS, RESIDENT = 1024, 8 * 1024, 264  # float32 kernel; H100/H200-like residency

DRIVER = r"""
#include <cstdio>
#include <cstdlib>
#include "fps/fps_plan.h"
int main(int argc, char** argv) {
  using namespace recon_fast::fps_plan;
  const long long B = atoll(argv[2]), N = atoll(argv[3]), T = atoll(argv[4]), R = atoll(argv[6]);
  const long long g = argv[1][0] == 'r' ? register_blocks_per_cloud(B, N, T, atoll(argv[5]), R)
                                        : scratch_blocks_per_cloud(B, N, T, R);
  printf("%lld\n", g);
  return 0;
}
"""


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    compiler = shutil.which(os.environ.get("CXX", "c++"))
    if compiler is None:
        pytest.skip("no host C++ compiler")
    folder = tmp_path_factory.mktemp("fps_plan")
    (folder / "driver.cpp").write_text(DRIVER)
    exe = folder / "driver"
    subprocess.run([compiler, "-std=c++17", "-O1", "-I", os.path.join(ROOT, "csrc"),
                    str(folder / "driver.cpp"), "-o", str(exe)], check=True, timeout=120)

    def blocks(path, B, N, resident=RESIDENT):
        out = subprocess.run([str(exe), path, str(B), str(N), str(THREADS), str(REG_POINTS),
                              str(resident)], capture_output=True, text=True, check=True)
        return int(out.stdout)

    return blocks


def test_one_big_cloud_gets_a_grid_sized_to_it(plan):
    # 100k points at four per thread over 1024-thread blocks: ceil(100000 / 4096) = 25 blocks,
    # not the 264 resident ones (nor the 98 of one point per thread).
    assert plan("register", 1, 100_000) == 25
    # The registers need ceil(9000 / 8192) = 2 blocks; four points per thread wants 3.
    assert plan("register", 2, 9000) == 3


def test_the_grid_never_exceeds_the_resident_blocks(plan):
    # 4 clouds of 300k: 74 blocks each would be wanted, 264 / 4 = 66 can be resident.
    assert plan("register", 4, 300_000) == 66
    # 2.5M points need 306 register blocks, more than can be resident: the scratch path.
    assert plan("register", 1, 2_500_000) == 0


def test_scratch_path_spreads_a_cloud_only_as_far_as_it_needs(plan):
    assert plan("scratch", 1, 2_500_000) == 153       # ceil(2.5M / (1024 * 16))
    assert plan("scratch", 1, 10_000_000) == RESIDENT  # capped by residency
    assert plan("scratch", 160, 8300) == 1             # the batch fills the GPU already
    assert plan("scratch", 1, 100) == 1
