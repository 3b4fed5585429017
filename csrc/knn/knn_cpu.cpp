// k nearest neighbours on the CPU.
//
// Small clouds: brute force. Distances are computed a SIMD vector at a time and compared with the
// current k-th best; only vectors with a lane that beats it reach the (packed-key) insertion, so
// most of the work is the vectorised distance itself. Large clouds: a kd-tree per cloud, searched
// with lexicographic (distance, index) pruning, which returns exactly the brute-force answer.
#include "knn/knn.h"

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
#include "common/neighbor_grad.h"

namespace recon_fast {
namespace {

// Clouds at least this large use the kd-tree when there are enough queries to repay its build.
constexpr int64_t kTreeMinPoints = 4096;
constexpr int64_t kTreeMinQueries = 64;
constexpr int32_t kTreeLeafSize = 16;

template <int Norm, typename T>
void knn_brute_force(const SoaCloud<T>& cloud, T qx, T qy, T qz, TopK<T>& top) {
  using V = typename Simd<T>::vec;
  constexpr int W = Simd<T>::width;
  const V vx = simd_splat<T>(qx), vy = simd_splat<T>(qy), vz = simd_splat<T>(qz);
  const int64_t padded = cloud.padded_size();
  for (int64_t i = 0; i < padded; i += W) {
    const V d = simd_point_dist<Norm, T>(vx - simd_load<T>(&cloud.x[i]),
                                          vy - simd_load<T>(&cloud.y[i]),
                                          vz - simd_load<T>(&cloud.z[i]));
    // Indices arrive in increasing order, so a distance equal to the current k-th best never
    // enters and `<` is exact. Padding lanes hold NaN coordinates and always compare false.
    const auto pass = d < simd_splat<T>(top.worst());
    uint64_t words[sizeof(pass) / sizeof(uint64_t)];
    __builtin_memcpy(words, &pass, sizeof(pass));
    uint64_t any = 0;
    for (uint64_t w : words) any |= w;
    if (any == 0) continue;
    for (int l = 0; l < W; ++l) {
      if (pass[l] && d[l] < top.worst()) top.insert(d[l], i + l);
    }
  }
}

template <typename scalar_t, int Norm>
void knn_impl(const at::Tensor& query, const at::Tensor& points, const std::vector<int64_t>& qlens,
              const std::vector<int64_t>& plens, int64_t k, at::Tensor& dist, at::Tensor& idx) {
  using T = acc_type<scalar_t>;
  const int64_t B = query.size(0), M = query.size(1), N = points.size(1);
  const scalar_t* q = query.data_ptr<scalar_t>();
  const scalar_t* p = points.data_ptr<scalar_t>();
  scalar_t* dist_out = dist.data_ptr<scalar_t>();
  int64_t* idx_out = idx.data_ptr<int64_t>();
  const T nan = std::numeric_limits<T>::quiet_NaN();

  std::vector<SoaCloud<T>> clouds(B);
  std::vector<KdTree<T>> trees(B);
  std::vector<char> use_tree(B);
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      clouds[b].load(p + b * N * 3, plens[b], nan);
      use_tree[b] = plens[b] >= kTreeMinPoints && qlens[b] >= kTreeMinQueries;
      if (use_tree[b]) {
        std::vector<int64_t> ids(plens[b]);
        for (int64_t i = 0; i < plens[b]; ++i) ids[i] = i;
        trees[b].build(clouds[b].x.data(), clouds[b].y.data(), clouds[b].z.data(),
                       std::move(ids), kTreeLeafSize);
      }
    }
  });

  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(N, 1));
  at::parallel_for(0, B * M, grain, [&](int64_t begin, int64_t end) {
    std::vector<typename TopK<T>::Key> keys(k);
    for (int64_t bm = begin; bm < end; ++bm) {
      const int64_t b = bm / M, i = bm % M;
      TopK<T> top(keys.data(), k);
      if (i < qlens[b]) {
        const scalar_t* qp = q + bm * 3;
        const T qx = static_cast<T>(qp[0]), qy = static_cast<T>(qp[1]),
                qz = static_cast<T>(qp[2]);
        if (use_tree[b]) {
          kdtree_knn<Norm, T>(trees[b], qx, qy, qz, top);
        } else {
          knn_brute_force<Norm, T>(clouds[b], qx, qy, qz, top);
        }
      }
      for (int64_t j = 0; j < k; ++j) {
        const bool found = j < top.count;
        dist_out[bm * k + j] = static_cast<scalar_t>(found ? top.dist(j) : T(0));
        idx_out[bm * k + j] = found ? top.index(j) : -1;
      }
    }
  });
}

}  // namespace

void check_knn_args(const at::Tensor& query, const at::Tensor& points,
                    const at::Tensor& query_lengths, const at::Tensor& point_lengths, int64_t k,
                    int64_t norm) {
  check_points(query, "query");
  check_points(points, "points");
  check_same_device(query, "query", points, "points");
  check_same_dtype(query, "query", points, "points");
  check_batch(query, "query", points, "points");
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
  const at::Tensor query = query_in.contiguous(), points = points_in.contiguous();
  const int64_t B = query.size(0), M = query.size(1);
  const std::vector<int64_t> qlens = read_lengths(query_lengths, M, "query_lengths");
  const std::vector<int64_t> plens = read_lengths(point_lengths, points.size(1), "point_lengths");
  at::Tensor dist = at::empty({B, M, k}, query.options());
  at::Tensor idx = at::empty({B, M, k}, query.options().dtype(at::kLong));
  if (B == 0 || M == 0) return {dist, idx};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, query.scalar_type(), "knn_cpu", [&] {
    if (norm == 2) {
      knn_impl<scalar_t, 2>(query, points, qlens, plens, k, dist, idx);
    } else {
      knn_impl<scalar_t, 1>(query, points, qlens, plens, k, dist, idx);
    }
  });
  return {dist, idx};
}

void check_knn_backward_args(const at::Tensor& grad_dist, const at::Tensor& query,
                             const at::Tensor& points, const at::Tensor& idx, int64_t norm) {
  check_points(query, "query");
  check_points(points, "points");
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
