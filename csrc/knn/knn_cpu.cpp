// k nearest neighbours on the CPU: argument checks, the call into the kernel compiled for this
// CPU's instruction set (knn_cpu_simd.h), and the backward.
#include "knn/knn.h"
#include "knn/knn_anyd.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "common/checks.h"
#include "common/cpu_utils.h"
#include "common/kdtree.h"
#include "common/morton.h"
#include "common/pad_points.h"
#include "common/neighbor_grad.h"

#define RECON_FAST_SIMD_BODY "knn/knn_cpu_simd.h"
#include "common/cpu_multiversion.h"

namespace recon_fast {

void check_knn_args(const at::Tensor& query, const at::Tensor& points,
                    const at::Tensor& query_lengths, const at::Tensor& point_lengths, int64_t k,
                    int64_t norm) {
  check_points(query, "query", /*channels=*/-1);
  check_points(points, "points", /*channels=*/-1);
  check_same_device(query, "query", points, "points");
  check_same_dtype(query, "query", points, "points");
  check_batch(query, "query", points, "points");
  check_same_point_dim(query, "query", points, "points");
  check_lengths(query_lengths, "query_lengths", query, "query");
  check_lengths(point_lengths, "point_lengths", points, "points");
  check_norm(norm);
  TORCH_CHECK_VALUE(k >= 1 && k <= points.size(1), "k must be in [1, N] = [1, ", points.size(1),
                    "] for points of shape ", shape_str(points), ", got k = ", k);
}

std::tuple<at::Tensor, at::Tensor> knn_cpu(const at::Tensor& query_in, const at::Tensor& points_in,
                                           const at::Tensor& query_lengths,
                                           const at::Tensor& point_lengths, int64_t k,
                                           int64_t norm) {
  check_knn_args(query_in, points_in, query_lengths, point_lengths, k, norm);
  // D = 1, 2 run the 3-D kernels on zero-padded points (exact, common/pad_points.h).
  const at::Tensor query = pad_points_to_3d(query_in.contiguous()),
                   points = pad_points_to_3d(points_in.contiguous());
  const int64_t B = query.size(0), M = query.size(1);
  const std::vector<int64_t> qlens = read_lengths(query_lengths, M, "query_lengths");
  const std::vector<int64_t> plens = read_lengths(point_lengths, points.size(1), "point_lengths");
  at::Tensor dist = at::empty({B, M, k}, query.options());
  at::Tensor idx = at::empty({B, M, k}, query.options().dtype(at::kLong));
  if (B == 0 || M == 0) return {dist, idx};
  if (query.size(2) != 3) {  // D > 3: the general kernels (knn_anyd.h)
    knn_anyd_cpu(query, points, qlens, plens, k, norm, dist, idx);
    return {dist, idx};
  }
  RECON_FAST_CPU_DISPATCH(knn_cpu_kernel, query, points, qlens, plens, k, norm, dist, idx);
  return {dist, idx};
}

void check_knn_backward_args(const at::Tensor& grad_dist, const at::Tensor& query,
                             const at::Tensor& points, const at::Tensor& idx, int64_t norm) {
  check_points(query, "query", /*channels=*/-1);
  check_points(points, "points", /*channels=*/-1);
  check_same_point_dim(query, "query", points, "points");
  check_same_dtype(query, "query", points, "points");
  check_same_dtype(grad_dist, "grad_dist", query, "query");
  check_same_device(grad_dist, "grad_dist", query, "query");
  check_same_device(points, "points", query, "query");
  check_index(idx, "idx", query, "query");
  check_norm(norm);
  TORCH_CHECK_VALUE(idx.dim() == 3 && idx.size(1) == query.size(1), "idx must have shape (B, M, k) ",
                    "matching query ", shape_str(query), ", got ", shape_str(idx));
  TORCH_CHECK_VALUE(grad_dist.sizes() == idx.sizes(), "grad_dist must have the shape of idx ",
                    shape_str(idx), ", got ", shape_str(grad_dist));
}

std::tuple<at::Tensor, at::Tensor> knn_backward_cpu(const at::Tensor& grad_dist_in,
                                                    const at::Tensor& query_in,
                                                    const at::Tensor& points_in,
                                                    const at::Tensor& idx_in, int64_t norm) {
  check_knn_backward_args(grad_dist_in, query_in, points_in, idx_in, norm);
  const at::Tensor grad_dist = grad_dist_in.contiguous(), query = query_in.contiguous(),
                   points = points_in.contiguous(), idx = idx_in.contiguous();
  if (query.size(2) != 3) return knn_backward_anyd_cpu(grad_dist, query, points, idx, norm);
  const int64_t B = query.size(0), M = query.size(1), N = points.size(1), K = idx.size(2);
  const auto acc_options = query.options().dtype(at::toOpMathType(query.scalar_type()));
  at::Tensor grad_query = at::zeros({B, M, 3}, acc_options);
  at::Tensor grad_points = at::zeros({B, N, 3}, acc_options);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, query.scalar_type(), "knn_backward_cpu",
                                  [&] {
    using T = acc_type<scalar_t>;
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        accumulate_neighbor_grads<scalar_t>(
            query.data_ptr<scalar_t>() + b * M * 3, points.data_ptr<scalar_t>() + b * N * 3,
            idx.data_ptr<int64_t>() + b * M * K, grad_dist.data_ptr<scalar_t>() + b * M * K, M, K,
            N, static_cast<int>(norm), grad_query.data_ptr<T>() + b * M * 3,
            grad_points.data_ptr<T>() + b * N * 3);
      }
    });
  });
  return {grad_query.to(query.scalar_type()), grad_points.to(query.scalar_type())};
}

TORCH_LIBRARY_IMPL(recon_fast, CPU, m) {
  m.impl("knn", &knn_cpu);
  m.impl("knn_backward", &knn_backward_cpu);
}

}  // namespace recon_fast
