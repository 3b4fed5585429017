// Farthest point sampling on the CPU: argument checks and the call into the kernel compiled for
// this CPU's instruction set (the kernels: fps_cpu_simd.h).
#include "fps/fps.h"
#include "fps/fps_anyd.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <limits>
#include <type_traits>
#include <vector>

#include "common/checks.h"
#include "common/cpu_utils.h"
#include "common/kdtree.h"
#include "common/pad_points.h"

#define RECON_FAST_SIMD_BODY "fps/fps_cpu_simd.h"
#include "common/cpu_multiversion.h"

namespace recon_fast {

void check_fps_args(const at::Tensor& xyz, const at::Tensor& lengths, int64_t m,
                    const at::Tensor& start_idx) {
  check_points(xyz, "xyz", /*channels=*/-1);
  TORCH_CHECK_VALUE(xyz.size(2) >= 1, "xyz must have points of dimension D >= 1, got shape ",
                    shape_str(xyz));
  check_lengths(lengths, "lengths", xyz, "xyz");
  check_lengths(start_idx, "start_idx", xyz, "xyz");
  TORCH_CHECK_VALUE(m >= 0 && m <= xyz.size(1), "m (number of samples) must be in [0, N] = [0, ",
                    xyz.size(1), "] for xyz of shape ", shape_str(xyz), ", got ", m);
}

at::Tensor fps_cpu(const at::Tensor& xyz_in, const at::Tensor& lengths, int64_t m,
                   const at::Tensor& start_idx, double min_norm_sq) {
  check_fps_args(xyz_in, lengths, m, start_idx);
  const at::Tensor xyz = pad_points_to_3d(xyz_in.contiguous());  // D = 1, 2: exact, 3-D kernels
  const int64_t B = xyz.size(0), N = xyz.size(1);
  const std::vector<int64_t> lens = read_lengths(lengths, N, "lengths");
  const std::vector<int64_t> starts = read_lengths(start_idx, N, "start_idx");
  for (int64_t b = 0; b < B; ++b) {
    TORCH_CHECK_VALUE(lens[b] == 0 || starts[b] < lens[b], "start_idx[", b, "] = ", starts[b],
                      " must be smaller than lengths[", b, "] = ", lens[b]);
  }
  at::Tensor idx = at::empty({B, m}, xyz.options().dtype(at::kLong));
  if (B == 0 || m == 0) return idx;
  if (xyz.size(2) != 3) {  // D > 3: the general kernel (fps_anyd.h)
    fps_anyd_cpu(xyz, lens, starts, m, min_norm_sq, idx);
    return idx;
  }
  RECON_FAST_CPU_DISPATCH(fps_cpu_kernel, xyz, lens, starts, m, min_norm_sq, idx);
  return idx;
}

TORCH_LIBRARY_IMPL(recon_fast, CPU, m) { m.impl("fps", &fps_cpu); }

}  // namespace recon_fast
