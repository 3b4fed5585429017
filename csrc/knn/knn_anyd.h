// k nearest neighbours in any point dimension D >= 1: the general path of the knn op, taken for
// D > 3 (knn_cpu.cpp and knn_cuda.cu dispatch on D at their entry: D = 3 keeps its kernels, and
// D = 1, 2 run them on zero-padded points, see common/pad_points.h). The kernels take any D >= 1
// all the same. Same semantics as knn.h: (distance, index) order, squared L2 or L1 distances summed
// over d = 0, 1, ..., D - 1 in that order, padding idx -1 and dist 0.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <tuple>
#include <vector>

namespace recon_fast {

// query (B, M, D), points (B, N, D), both contiguous and checked (check_knn_args); dist and idx
// (B, M, k) are filled.
void knn_anyd_cpu(const at::Tensor& query, const at::Tensor& points,
                  const std::vector<int64_t>& qlens, const std::vector<int64_t>& plens, int64_t k,
                  int64_t norm, at::Tensor& dist, at::Tensor& idx);

// Gradients of the distances w.r.t. query (B, M, D) and points (B, N, D) (contiguous, checked).
std::tuple<at::Tensor, at::Tensor> knn_backward_anyd_cpu(const at::Tensor& grad_dist,
                                                         const at::Tensor& query,
                                                         const at::Tensor& points,
                                                         const at::Tensor& idx, int64_t norm);

#if defined(RECON_FAST_WITH_CUDA)
// The CUDA counterparts (knn_anyd_cuda.cu); the same preconditions, tensors on one GPU.
void knn_anyd_cuda(const at::Tensor& query, const at::Tensor& points,
                   const at::Tensor& query_lengths, const at::Tensor& point_lengths, int64_t k,
                   int64_t norm, at::Tensor& dist, at::Tensor& idx);

std::tuple<at::Tensor, at::Tensor> knn_backward_anyd_cuda(const at::Tensor& grad_dist,
                                                          const at::Tensor& query,
                                                          const at::Tensor& points,
                                                          const at::Tensor& idx, int64_t norm);
#endif

}  // namespace recon_fast
