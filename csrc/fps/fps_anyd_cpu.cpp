// Farthest point sampling in any point dimension on the CPU: the call into the kernel compiled
// for this CPU's instruction set (fps_anyd_cpu_simd.h).
#include "fps/fps_anyd.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <limits>
#include <type_traits>
#include <vector>

#include "common/cpu_utils.h"

#define RECON_FAST_SIMD_BODY "fps/fps_anyd_cpu_simd.h"
#include "common/cpu_multiversion.h"

namespace recon_fast {

void fps_anyd_cpu(const at::Tensor& xyz, const std::vector<int64_t>& lens,
                  const std::vector<int64_t>& starts, int64_t m, double min_norm_sq,
                  at::Tensor& idx) {
  RECON_FAST_CPU_DISPATCH(fps_anyd_cpu_kernel, xyz, lens, starts, m, min_norm_sq, idx);
}

}  // namespace recon_fast
