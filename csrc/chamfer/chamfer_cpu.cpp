// Chamfer nearest neighbours on the CPU.
//
// Small pairs (the pretraining loss: thousands of 32x32 patches): one fused brute-force pass per
// pair. For each x point a SIMD sweep over y yields its nearest y (per-lane argmin, then a
// cross-lane reduction with index tie-break) and, in the same sweep, lowers the running nearest
// x of every y (strict `<` keeps the lowest x index). Both directions cost one distance matrix.
// Large pairs: a kd-tree per cloud and exact nearest-neighbour queries both ways.
#include "chamfer/chamfer.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <limits>
#include <type_traits>
#include <vector>

#include "common/checks.h"
#include "common/cpu_utils.h"
#include "common/kdtree.h"
#include "common/neighbor_grad.h"

namespace recon_fast {
namespace {

// Pairs whose smaller cloud has at least this many points use kd-trees.
constexpr int64_t kTreeMinPoints = 1024;
constexpr int32_t kTreeLeafSize = 16;

template <int Norm, typename scalar_t>
void chamfer_pair_brute_force(const scalar_t* xp, int64_t nx, const scalar_t* yp, int64_t ny,
                              scalar_t* dist_xy, int64_t* idx_xy, scalar_t* dist_yx,
                              int64_t* idx_yx) {
  using T = acc_type<scalar_t>;
  using V = typename Simd<T>::vec;
  using IV = typename Simd<T>::ivec;
  using I = typename std::remove_reference<decltype(IV{}[0])>::type;
  constexpr int W = Simd<T>::width;
  constexpr T inf = std::numeric_limits<T>::infinity();
  SoaCloud<T> y;
  y.load(yp, ny, std::numeric_limits<T>::quiet_NaN());
  const int64_t padded = y.padded_size();
  std::vector<T> col_min(padded, inf);
  std::vector<I> col_arg(padded, static_cast<I>(-1));
  IV lane;
  for (int l = 0; l < W; ++l) lane[l] = static_cast<I>(l);
  const IV step = lane * 0 + static_cast<I>(W);

  for (int64_t i = 0; i < nx; ++i) {
    const T qx = static_cast<T>(xp[3 * i]), qy = static_cast<T>(xp[3 * i + 1]),
            qz = static_cast<T>(xp[3 * i + 2]);
    const V vx = simd_splat<T>(qx), vy = simd_splat<T>(qy), vz = simd_splat<T>(qz);
    const IV vi = lane * 0 + static_cast<I>(i);
    V best = simd_splat<T>(inf);
    IV best_idx = lane * 0 - 1;
    IV cur = lane;
    for (int64_t j = 0; j < padded; j += W) {
      const V d = simd_point_dist<Norm, T>(vx - simd_load<T>(&y.x[j]), vy - simd_load<T>(&y.y[j]),
                                            vz - simd_load<T>(&y.z[j]));
      // Lanes see increasing j, so strict `<` keeps each lane's lowest index. `d == d` admits a
      // first finite-or-infinite candidate (padding lanes are NaN and never do).
      const auto lt = (d < best) | ((best_idx < 0) & (d == d));
      best = lt ? d : best;
      best_idx = lt ? cur : best_idx;
      cur += step;
      V cm = simd_load<T>(&col_min[j]);
      IV ca;
      __builtin_memcpy(&ca, &col_arg[j], sizeof(ca));
      const auto clt = (d < cm) | ((ca < 0) & (d == d));
      cm = clt ? d : cm;
      ca = clt ? vi : ca;
      simd_store<T>(&col_min[j], cm);
      __builtin_memcpy(&col_arg[j], &ca, sizeof(ca));
    }
    T best_val = inf;
    I best_i = -1;
    for (int l = 0; l < W; ++l) {
      if (best_idx[l] < 0) continue;
      if (best_i < 0 || best[l] < best_val || (best[l] == best_val && best_idx[l] < best_i)) {
        best_val = best[l];
        best_i = best_idx[l];
      }
    }
    dist_xy[i] = static_cast<scalar_t>(best_i < 0 ? T(0) : best_val);
    idx_xy[i] = best_i;
  }
  for (int64_t j = 0; j < ny; ++j) {
    dist_yx[j] = static_cast<scalar_t>(col_arg[j] < 0 ? T(0) : col_min[j]);
    idx_yx[j] = col_arg[j];
  }
}

// Nearest neighbour of every query in `queries` among the tree's points (both read as acc type).
template <int Norm, typename scalar_t>
void nearest_with_tree(const KdTree<acc_type<scalar_t>>& tree, const scalar_t* queries,
                       int64_t count, scalar_t* dist, int64_t* idx) {
  using T = acc_type<scalar_t>;
  for (int64_t i = 0; i < count; ++i) {
    typename TopK<T>::Key key;
    TopK<T> top(&key, 1);
    kdtree_knn<Norm, T>(tree, static_cast<T>(queries[3 * i]), static_cast<T>(queries[3 * i + 1]),
                        static_cast<T>(queries[3 * i + 2]), top);
    dist[i] = static_cast<scalar_t>(top.count ? top.dist(0) : T(0));
    idx[i] = top.count ? top.index(0) : -1;
  }
}

template <typename scalar_t>
KdTree<acc_type<scalar_t>> build_tree(const scalar_t* xyz, int64_t n) {
  using T = acc_type<scalar_t>;
  SoaCloud<T> cloud;
  cloud.load(xyz, n, T(0));
  std::vector<int64_t> ids(n);
  for (int64_t i = 0; i < n; ++i) ids[i] = i;
  KdTree<T> tree;
  tree.build(cloud.x.data(), cloud.y.data(), cloud.z.data(), std::move(ids), kTreeLeafSize);
  return tree;
}

template <typename scalar_t, int Norm>
void chamfer_impl(const at::Tensor& x, const at::Tensor& y, const std::vector<int64_t>& xl,
                  const std::vector<int64_t>& yl, at::Tensor& dxy, at::Tensor& dyx,
                  at::Tensor& ixy, at::Tensor& iyx) {
  const int64_t B = x.size(0), N = x.size(1), M = y.size(1);
  const scalar_t* xp = x.data_ptr<scalar_t>();
  const scalar_t* yp = y.data_ptr<scalar_t>();
  scalar_t* dxy_p = dxy.data_ptr<scalar_t>();
  scalar_t* dyx_p = dyx.data_ptr<scalar_t>();
  int64_t* ixy_p = ixy.data_ptr<int64_t>();
  int64_t* iyx_p = iyx.data_ptr<int64_t>();
  auto fill_padding = [&](int64_t b) {
    for (int64_t i = xl[b]; i < N; ++i) dxy_p[b * N + i] = scalar_t(0), ixy_p[b * N + i] = -1;
    for (int64_t j = yl[b]; j < M; ++j) dyx_p[b * M + j] = scalar_t(0), iyx_p[b * M + j] = -1;
  };
  std::vector<char> large(B);
  for (int64_t b = 0; b < B; ++b) large[b] = std::min(xl[b], yl[b]) >= kTreeMinPoints;

  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      fill_padding(b);
      if (large[b]) continue;
      chamfer_pair_brute_force<Norm, scalar_t>(xp + b * N * 3, xl[b], yp + b * M * 3, yl[b],
                                               dxy_p + b * N, ixy_p + b * N, dyx_p + b * M,
                                               iyx_p + b * M);
    }
  });

  // Large pairs: build both trees per pair, then spread the queries of both directions over the
  // threads (a single big pair still uses every core).
  using T = acc_type<scalar_t>;
  std::vector<int64_t> large_ids;
  for (int64_t b = 0; b < B; ++b) {
    if (large[b]) large_ids.push_back(b);
  }
  if (large_ids.empty()) return;
  const int64_t L = static_cast<int64_t>(large_ids.size());
  std::vector<KdTree<T>> x_trees(L), y_trees(L);
  at::parallel_for(0, 2 * L, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t b = large_ids[t / 2];
      if (t % 2 == 0) {
        x_trees[t / 2] = build_tree(xp + b * N * 3, xl[b]);
      } else {
        y_trees[t / 2] = build_tree(yp + b * M * 3, yl[b]);
      }
    }
  });
  constexpr int64_t kChunk = 256;
  const int64_t chunks_x = (N + kChunk - 1) / kChunk, chunks_y = (M + kChunk - 1) / kChunk;
  at::parallel_for(0, L * (chunks_x + chunks_y), 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t l = t / (chunks_x + chunks_y), c = t % (chunks_x + chunks_y);
      const int64_t b = large_ids[l];
      if (c < chunks_x) {
        const int64_t lo = c * kChunk, hi = std::min(xl[b], lo + kChunk);
        if (lo < hi) {
          nearest_with_tree<Norm, scalar_t>(y_trees[l], xp + (b * N + lo) * 3, hi - lo,
                                            dxy_p + b * N + lo, ixy_p + b * N + lo);
        }
      } else {
        const int64_t lo = (c - chunks_x) * kChunk, hi = std::min(yl[b], lo + kChunk);
        if (lo < hi) {
          nearest_with_tree<Norm, scalar_t>(x_trees[l], yp + (b * M + lo) * 3, hi - lo,
                                            dyx_p + b * M + lo, iyx_p + b * M + lo);
        }
      }
    }
  });
}

}  // namespace

void check_chamfer_args(const at::Tensor& x, const at::Tensor& y, const at::Tensor& x_lengths,
                        const at::Tensor& y_lengths, int64_t norm) {
  check_points(x, "x");
  check_points(y, "y");
  check_same_device(x, "x", y, "y");
  check_same_dtype(x, "x", y, "y");
  check_batch(x, "x", y, "y");
  check_lengths(x_lengths, "x_lengths", x, "x");
  check_lengths(y_lengths, "y_lengths", y, "y");
  check_norm(norm);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> chamfer_cpu(
    const at::Tensor& x_in, const at::Tensor& y_in, const at::Tensor& x_lengths,
    const at::Tensor& y_lengths, int64_t norm) {
  check_chamfer_args(x_in, y_in, x_lengths, y_lengths, norm);
  const at::Tensor x = x_in.contiguous(), y = y_in.contiguous();
  const int64_t B = x.size(0), N = x.size(1), M = y.size(1);
  const std::vector<int64_t> xl = read_lengths(x_lengths, N, "x_lengths");
  const std::vector<int64_t> yl = read_lengths(y_lengths, M, "y_lengths");
  at::Tensor dxy = at::empty({B, N}, x.options()), dyx = at::empty({B, M}, x.options());
  at::Tensor ixy = at::empty({B, N}, x.options().dtype(at::kLong));
  at::Tensor iyx = at::empty({B, M}, x.options().dtype(at::kLong));
  if (B == 0) return {dxy, dyx, ixy, iyx};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "chamfer_cpu", [&] {
    if (norm == 2) {
      chamfer_impl<scalar_t, 2>(x, y, xl, yl, dxy, dyx, ixy, iyx);
    } else {
      chamfer_impl<scalar_t, 1>(x, y, xl, yl, dxy, dyx, ixy, iyx);
    }
  });
  return {dxy, dyx, ixy, iyx};
}

void check_chamfer_backward_args(const at::Tensor& grad_dist_xy, const at::Tensor& grad_dist_yx,
                                 const at::Tensor& x, const at::Tensor& y,
                                 const at::Tensor& idx_xy, const at::Tensor& idx_yx,
                                 int64_t norm) {
  check_points(x, "x");
  check_points(y, "y");
  check_same_dtype(x, "x", y, "y");
  check_same_device(x, "x", y, "y");
  check_batch(x, "x", y, "y");
  check_index(idx_xy, "idx_xy", x, "x");
  check_index(idx_yx, "idx_yx", y, "y");
  check_same_dtype(grad_dist_xy, "grad_dist_xy", x, "x");
  check_same_dtype(grad_dist_yx, "grad_dist_yx", x, "x");
  check_same_device(grad_dist_xy, "grad_dist_xy", x, "x");
  check_same_device(grad_dist_yx, "grad_dist_yx", x, "x");
  check_norm(norm);
  TORCH_CHECK_VALUE(idx_xy.dim() == 2 && idx_xy.size(1) == x.size(1) &&
                        grad_dist_xy.sizes() == idx_xy.sizes(),
                    "idx_xy and grad_dist_xy must have shape (B, N) = ", "(", x.size(0), ", ",
                    x.size(1), "), got ", shape_str(idx_xy), " and ", shape_str(grad_dist_xy));
  TORCH_CHECK_VALUE(idx_yx.dim() == 2 && idx_yx.size(1) == y.size(1) &&
                        grad_dist_yx.sizes() == idx_yx.sizes(),
                    "idx_yx and grad_dist_yx must have shape (B, M) = ", "(", y.size(0), ", ",
                    y.size(1), "), got ", shape_str(idx_yx), " and ", shape_str(grad_dist_yx));
}

std::tuple<at::Tensor, at::Tensor> chamfer_backward_cpu(
    const at::Tensor& gxy_in, const at::Tensor& gyx_in, const at::Tensor& x_in,
    const at::Tensor& y_in, const at::Tensor& ixy_in, const at::Tensor& iyx_in, int64_t norm) {
  check_chamfer_backward_args(gxy_in, gyx_in, x_in, y_in, ixy_in, iyx_in, norm);
  const at::Tensor gxy = gxy_in.contiguous(), gyx = gyx_in.contiguous(), x = x_in.contiguous(),
                   y = y_in.contiguous(), ixy = ixy_in.contiguous(), iyx = iyx_in.contiguous();
  const int64_t B = x.size(0), N = x.size(1), M = y.size(1);
  const auto acc_options = x.options().dtype(at::toOpMathType(x.scalar_type()));
  at::Tensor grad_x = at::zeros({B, N, 3}, acc_options);
  at::Tensor grad_y = at::zeros({B, M, 3}, acc_options);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                  "chamfer_backward_cpu", [&] {
    using T = acc_type<scalar_t>;
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* yp = y.data_ptr<scalar_t>();
    T* gx = grad_x.data_ptr<T>();
    T* gy = grad_y.data_ptr<T>();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        accumulate_neighbor_grads<scalar_t>(xp + b * N * 3, yp + b * M * 3,
                                            ixy.data_ptr<int64_t>() + b * N,
                                            gxy.data_ptr<scalar_t>() + b * N, N, 1, M,
                                            static_cast<int>(norm), gx + b * N * 3, gy + b * M * 3);
        accumulate_neighbor_grads<scalar_t>(yp + b * M * 3, xp + b * N * 3,
                                            iyx.data_ptr<int64_t>() + b * M,
                                            gyx.data_ptr<scalar_t>() + b * M, M, 1, N,
                                            static_cast<int>(norm), gy + b * M * 3, gx + b * N * 3);
      }
    });
  });
  return {grad_x.to(x.scalar_type()), grad_y.to(x.scalar_type())};
}

TORCH_LIBRARY_IMPL(recon_fast, CPU, m) {
  m.impl("chamfer", &chamfer_cpu);
  m.impl("chamfer_backward", &chamfer_backward_cpu);
}

}  // namespace recon_fast
