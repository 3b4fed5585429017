// Farthest point sampling in any point dimension D >= 1: the general path of the fps op, taken
// for D > 3 (fps_cpu.cpp and fps_cuda.cu dispatch on D at their entry: D = 3 keeps its kernels,
// and D = 1, 2 run them on zero-padded points, see common/pad_points.h). The kernel takes any
// D >= 1 all the same. Same semantics as fps.h; squared distances and norms are summed over d = 0, ..., D - 1
// in that order.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace recon_fast {

// xyz (B, N, D) contiguous and checked (check_fps_args, start indices inside the lengths);
// idx (B, m) is filled.
void fps_anyd_cpu(const at::Tensor& xyz, const std::vector<int64_t>& lens,
                  const std::vector<int64_t>& starts, int64_t m, double min_norm_sq,
                  at::Tensor& idx);

#if defined(RECON_FAST_WITH_CUDA)
// The CUDA counterpart (fps_anyd_cuda.cu): lengths and start_idx (B,) int64 on the GPU.
void fps_anyd_cuda(const at::Tensor& xyz, const at::Tensor& lengths, int64_t m,
                   const at::Tensor& start_idx, double min_norm_sq, at::Tensor& idx);
#endif

}  // namespace recon_fast
