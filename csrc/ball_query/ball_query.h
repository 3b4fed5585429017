// Ball query: for every query point, the first k points (in index order) strictly within a
// radius, the neighbourhood that PointNet++ groups and pytorch3d's ball_query returns.
//
//   query          (B, M, D), points (B, N, D), same floating dtype and device, any D >= 1
//   query_lengths  (B,) int64 <= M, point_lengths (B,) int64 <= N (ragged, padded clouds)
//   k              k >= 1, the most neighbours kept per query
//   radius         >= 0; a point is inside when its squared distance < radius * radius, both
//                  in the accumulation type (float for halves and float32, double for float64)
// returns dist (B, M, k) squared distances in the input dtype and idx (B, M, k) int64: the
// first k points inside, in increasing index order; the remaining slots, and every slot of a
// padded query (i >= query_lengths[b]), hold idx -1 and dist 0 (pytorch3d's padding).
//
// ball_query_backward(grad_dist (B, M, k), query, points, idx) -> (grad_query, grad_points):
// d dist / d query = 2 (query - point), the opposite for the point; slots with idx -1 add nothing.
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace recon_fast {

std::tuple<at::Tensor, at::Tensor> ball_query_cpu(const at::Tensor& query,
                                                  const at::Tensor& points,
                                                  const at::Tensor& query_lengths,
                                                  const at::Tensor& point_lengths, int64_t k,
                                                  double radius);

std::tuple<at::Tensor, at::Tensor> ball_query_backward_cpu(const at::Tensor& grad_dist,
                                                           const at::Tensor& query,
                                                           const at::Tensor& points,
                                                           const at::Tensor& idx);

void check_ball_query_args(const at::Tensor& query, const at::Tensor& points,
                           const at::Tensor& query_lengths, const at::Tensor& point_lengths,
                           int64_t k, double radius);

void check_ball_query_backward_args(const at::Tensor& grad_dist, const at::Tensor& query,
                                    const at::Tensor& points, const at::Tensor& idx);

}  // namespace recon_fast
