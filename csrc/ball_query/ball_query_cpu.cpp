// Ball query on the CPU: one task per query point (at::parallel_for over B * M), each a scan of
// its cloud in index order that stops as soon as k points are inside. Distances are summed in
// the reference's order ((d0^2 + d1^2) + d2^2 + ...), so membership near the boundary is decided
// exactly as in the PyTorch restatement. D = 2 and 3 get unrolled loops, other D a runtime loop.
#include "ball_query/ball_query.h"
#include "knn/knn_anyd.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/checks.h"

namespace recon_fast {
namespace {

template <typename scalar_t>
using acc_t = at::opmath_type<scalar_t>;

// Enough queries per task that scheduling stays cheap for small clouds.
constexpr int64_t kQueriesPerTask = 16;

// Squared distance between q (already in the accumulation type) and point p, summed in index
// order of the coordinates. kDim > 0 fixes the dimension at compile time; 0 reads `dim`.
template <int kDim, typename T, typename scalar_t>
inline T squared_distance(const T* q, const scalar_t* p, int64_t dim) {
  const int64_t D = kDim > 0 ? kDim : dim;
  T sum = T(0);
  for (int64_t d = 0; d < D; ++d) {
    const T diff = q[d] - static_cast<T>(p[d]);
    sum = sum + diff * diff;
  }
  return sum;
}

std::vector<int64_t> checked_lengths(const at::Tensor& lengths, int64_t max_len,
                                     const char* name) {
  const at::Tensor contiguous = lengths.contiguous();
  const int64_t* p = contiguous.data_ptr<int64_t>();
  std::vector<int64_t> out(p, p + contiguous.numel());
  for (size_t b = 0; b < out.size(); ++b) {
    TORCH_CHECK_VALUE(out[b] >= 0 && out[b] <= max_len, name, "[", b, "] = ", out[b],
                      " is outside [0, ", max_len, "]");
  }
  return out;
}

template <int kDim, typename scalar_t>
void ball_query_impl(const at::Tensor& query, const at::Tensor& points,
                     const std::vector<int64_t>& qlens, const std::vector<int64_t>& plens,
                     int64_t k, double radius, at::Tensor& dist, at::Tensor& idx) {
  using T = acc_t<scalar_t>;
  const int64_t B = query.size(0), M = query.size(1), N = points.size(1), D = query.size(2);
  const T r = static_cast<T>(radius);
  const T r2 = r * r;  // as pointnet2 and pytorch3d: the radius rounded first, then squared
  const scalar_t* q_data = query.data_ptr<scalar_t>();
  const scalar_t* p_data = points.data_ptr<scalar_t>();
  scalar_t* dist_data = dist.data_ptr<scalar_t>();
  int64_t* idx_data = idx.data_ptr<int64_t>();
  at::parallel_for(0, B * M, kQueriesPerTask, [&](int64_t begin, int64_t end) {
    std::vector<T> q(D);
    for (int64_t bm = begin; bm < end; ++bm) {
      const int64_t b = bm / M, i = bm - b * M;
      scalar_t* out_dist = dist_data + bm * k;
      int64_t* out_idx = idx_data + bm * k;
      int64_t count = 0;
      if (i < qlens[b]) {
        for (int64_t d = 0; d < D; ++d) q[d] = static_cast<T>(q_data[bm * D + d]);
        const scalar_t* cloud = p_data + b * N * D;
        for (int64_t j = 0; j < plens[b] && count < k; ++j) {
          const T d2 = squared_distance<kDim>(q.data(), cloud + j * D, D);
          if (d2 < r2) {
            out_dist[count] = static_cast<scalar_t>(d2);
            out_idx[count] = j;
            ++count;
          }
        }
      }
      std::fill(out_dist + count, out_dist + k, scalar_t(0));
      std::fill(out_idx + count, out_idx + k, int64_t(-1));
    }
  });
}

}  // namespace

void check_ball_query_args(const at::Tensor& query, const at::Tensor& points,
                           const at::Tensor& query_lengths, const at::Tensor& point_lengths,
                           int64_t k, double radius) {
  check_points(query, "query", /*channels=*/-1);
  check_points(points, "points", /*channels=*/-1);
  check_same_device(query, "query", points, "points");
  check_same_dtype(query, "query", points, "points");
  check_batch(query, "query", points, "points");
  TORCH_CHECK_VALUE(query.size(2) == points.size(2), "query and points must have the same point ",
                    "dimension D, got query ", shape_str(query), " and points ", shape_str(points));
  TORCH_CHECK_VALUE(query.size(2) >= 1, "query must have points of dimension D >= 1, got ",
                    shape_str(query));
  check_lengths(query_lengths, "query_lengths", query, "query");
  check_lengths(point_lengths, "point_lengths", points, "points");
  TORCH_CHECK_VALUE(k >= 1, "k must be >= 1 (neighbours kept per query), got ", k);
  TORCH_CHECK_VALUE(std::isfinite(radius) && radius >= 0, "radius must be finite and >= 0, got ",
                    radius);
}

std::tuple<at::Tensor, at::Tensor> ball_query_cpu(const at::Tensor& query_in,
                                                  const at::Tensor& points_in,
                                                  const at::Tensor& query_lengths,
                                                  const at::Tensor& point_lengths, int64_t k,
                                                  double radius) {
  check_ball_query_args(query_in, points_in, query_lengths, point_lengths, k, radius);
  const at::Tensor query = query_in.contiguous(), points = points_in.contiguous();
  const int64_t B = query.size(0), M = query.size(1), D = query.size(2);
  const std::vector<int64_t> qlens = checked_lengths(query_lengths, M, "query_lengths");
  const std::vector<int64_t> plens = checked_lengths(point_lengths, points.size(1),
                                                     "point_lengths");
  at::Tensor dist = at::empty({B, M, k}, query.options());
  at::Tensor idx = at::empty({B, M, k}, query.options().dtype(at::kLong));
  if (B == 0 || M == 0) return {dist, idx};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, query.scalar_type(),
                                  "ball_query_cpu", [&] {
    if (D == 3) {
      ball_query_impl<3, scalar_t>(query, points, qlens, plens, k, radius, dist, idx);
    } else if (D == 2) {
      ball_query_impl<2, scalar_t>(query, points, qlens, plens, k, radius, dist, idx);
    } else {
      ball_query_impl<0, scalar_t>(query, points, qlens, plens, k, radius, dist, idx);
    }
  });
  return {dist, idx};
}

void check_ball_query_backward_args(const at::Tensor& grad_dist, const at::Tensor& query,
                                    const at::Tensor& points, const at::Tensor& idx) {
  check_points(query, "query", /*channels=*/-1);
  check_points(points, "points", /*channels=*/-1);
  check_same_dtype(query, "query", points, "points");
  check_same_dtype(grad_dist, "grad_dist", query, "query");
  check_same_device(grad_dist, "grad_dist", query, "query");
  check_same_device(points, "points", query, "query");
  check_batch(query, "query", points, "points");
  TORCH_CHECK_VALUE(query.size(2) == points.size(2), "query and points must have the same point ",
                    "dimension D, got query ", shape_str(query), " and points ", shape_str(points));
  check_index(idx, "idx", query, "query");
  TORCH_CHECK_VALUE(idx.dim() == 3 && idx.size(1) == query.size(1),
                    "idx must have shape (B, M, k) matching query ", shape_str(query), ", got ",
                    shape_str(idx));
  TORCH_CHECK_VALUE(grad_dist.sizes() == idx.sizes(), "grad_dist must have the shape of idx ",
                    shape_str(idx), ", got ", shape_str(grad_dist));
}

std::tuple<at::Tensor, at::Tensor> ball_query_backward_cpu(const at::Tensor& grad_dist_in,
                                                           const at::Tensor& query_in,
                                                           const at::Tensor& points_in,
                                                           const at::Tensor& idx_in) {
  check_ball_query_backward_args(grad_dist_in, query_in, points_in, idx_in);
  const at::Tensor grad_dist = grad_dist_in.contiguous(), query = query_in.contiguous(),
                   points = points_in.contiguous(), idx = idx_in.contiguous();
  // The gradient of squared distances to indexed neighbours is the kNN backward's (norm 2).
  return knn_backward_anyd_cpu(grad_dist, query, points, idx, /*norm=*/2);
}

TORCH_LIBRARY_IMPL(recon_fast, CPU, m) {
  m.impl("ball_query", &ball_query_cpu);
  m.impl("ball_query_backward", &ball_query_backward_cpu);
}

}  // namespace recon_fast
