// Gather rows of a batched point/feature tensor by index.
//
//   points (B, N, C) float16 | bfloat16 | float32 | float64, idx (B, S) int64 in [-1, N)
// returns out (B, S, C): out[b, s] = points[b, idx[b, s]], zeros where idx[b, s] == -1.
//
// gather_points_backward(grad_out (B, S, C), idx (B, S), num_points N) -> grad_points (B, N, C),
// the scatter-add of grad_out into the gathered rows (accumulated in float32 for half types).
#pragma once

#include <ATen/core/Tensor.h>

namespace recon_fast {

at::Tensor gather_points_cpu(const at::Tensor& points, const at::Tensor& idx);
at::Tensor gather_points_backward_cpu(const at::Tensor& grad_out, const at::Tensor& idx,
                                      int64_t num_points);

void check_gather_points_args(const at::Tensor& points, const at::Tensor& idx);
void check_gather_points_backward_args(const at::Tensor& grad_out, const at::Tensor& idx,
                                       int64_t num_points);

}  // namespace recon_fast
