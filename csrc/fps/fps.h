// Farthest point sampling.
//
//   xyz        (B, N, 3) float16 | bfloat16 | float32 | float64
//   lengths    (B,) int64, 0 <= lengths[b] <= N: points of cloud b are xyz[b, :lengths[b]]
//   m          number of samples, 0 <= m <= N
//   start_idx  (B,) int64, the first sample of each cloud (0 <= start_idx[b] < lengths[b])
//   min_norm_sq  points with |p|^2 <= min_norm_sq are never chosen (pointnet2_ops: 1e-3; < 0: off)
// returns idx (B, m) int64; idx[b, j] = -1 for j >= lengths[b].
//
// Semantics (pointnet2_ops): each next sample maximises the running minimum squared distance to
// the samples so far; ties go to the lowest index.
#pragma once

#include <ATen/core/Tensor.h>

namespace recon_fast {

at::Tensor fps_cpu(const at::Tensor& xyz, const at::Tensor& lengths, int64_t m,
                   const at::Tensor& start_idx, double min_norm_sq);

// Validation shared by the CPU and CUDA entry points (shapes, dtypes, devices, m).
void check_fps_args(const at::Tensor& xyz, const at::Tensor& lengths, int64_t m,
                    const at::Tensor& start_idx);

}  // namespace recon_fast
