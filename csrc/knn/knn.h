// k nearest neighbours.
//
//   query          (B, M, 3), points (B, N, 3), same floating dtype and device
//   query_lengths  (B,) int64 <= M, point_lengths (B,) int64 <= N
//   k              1 <= k <= N
//   norm           2: squared Euclidean distance, 1: L1 distance
// returns dist (B, M, k) in the input dtype, idx (B, M, k) int64, sorted by (distance, index):
// ties go to the lowest index. Missing neighbours (k > point_lengths[b]) and padded queries get
// idx -1 and dist 0.
//
// knn_backward(grad_dist (B, M, k), query, points, idx, norm) -> (grad_query, grad_points).
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace recon_fast {

std::tuple<at::Tensor, at::Tensor> knn_cpu(const at::Tensor& query, const at::Tensor& points,
                                           const at::Tensor& query_lengths,
                                           const at::Tensor& point_lengths, int64_t k,
                                           int64_t norm);

std::tuple<at::Tensor, at::Tensor> knn_backward_cpu(const at::Tensor& grad_dist,
                                                    const at::Tensor& query,
                                                    const at::Tensor& points,
                                                    const at::Tensor& idx, int64_t norm);

void check_knn_args(const at::Tensor& query, const at::Tensor& points,
                    const at::Tensor& query_lengths, const at::Tensor& point_lengths, int64_t k,
                    int64_t norm);

void check_knn_backward_args(const at::Tensor& grad_dist, const at::Tensor& query,
                             const at::Tensor& points, const at::Tensor& idx, int64_t norm);

}  // namespace recon_fast
