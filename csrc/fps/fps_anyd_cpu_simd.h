// The SIMD body of farthest point sampling in any point dimension D on the CPU, compiled once per
// CPU capability (fps_anyd_cpu.cpp includes it through common/cpu_multiversion.h).
//
// Brute force over a blocked cloud (common/blocked_cloud_simd.h): one pass per sample lowers the
// running minimum distances a vector of points at a time and tracks a per-lane argmax (lanes see
// increasing indices, so strict `>` keeps each lane's lowest index and the cross-lane reduction
// breaks ties by index), exactly as the 3-D brute force does. The op runs it for D > 3 (D = 1, 2
// take the 3-D kernels on zero-padded points).
#include "common/cpu_simd.h"
#include "common/blocked_cloud_simd.h"

namespace recon_fast {
namespace CPU_CAPABILITY {
namespace {

template <int kDim, typename T>
void fps_anyd_brute_force(const BlockedCloud<T>& cloud, const std::vector<T>& rows,
                          const std::vector<char>& eligible, int64_t start, int64_t count,
                          int64_t* out) {
  using V = typename Simd<T>::vec;
  using IV = typename Simd<T>::ivec;
  using I = typename std::remove_reference<decltype(IV{}[0])>::type;
  constexpr int W = Simd<T>::width;
  constexpr T inf = std::numeric_limits<T>::infinity();
  const int64_t D = cloud.dim;
  // -inf: never chosen (padding lanes, excluded points); +inf: not yet near any sample.
  std::vector<T> mind(cloud.blocks * W, -inf);
  for (int64_t i = 0; i < cloud.size; ++i) mind[i] = eligible[i] ? inf : -inf;

  const IV lane = simd_lanes<T>();
  out[0] = start;
  int64_t last = start;
  for (int64_t j = 1; j < count; ++j) {
    const T* chosen = rows.data() + last * D;
    // Two running maxima (even and odd blocks) so two compare-and-blend chains overlap; each
    // still sees its indices in increasing order.
    V best[2] = {simd_splat<T>(-inf), simd_splat<T>(-inf)};
    IV best_idx[2] = {lane, lane};
    auto visit = [&](int64_t blk, int a) {
      V d[1];
      block_dists<2, kDim, 1, T>(cloud.block(blk), chosen, D, d);
      V md = simd_load<T>(&mind[blk * W]);
      md = d[0] < md ? d[0] : md;
      simd_store<T>(&mind[blk * W], md);
      const auto gt = md > best[a];
      best[a] = gt ? md : best[a];
      best_idx[a] = gt ? lane + static_cast<I>(blk * W) : best_idx[a];
    };
    int64_t blk = 0;
    for (; blk + 2 <= cloud.blocks; blk += 2) {
      visit(blk, 0);
      visit(blk + 1, 1);
    }
    if (blk < cloud.blocks) visit(blk, 0);
    last = simd_argmax_lowest_index<T>(best, best_idx);
    out[j] = last;
  }
}

template <int kDim, typename scalar_t>
void fps_anyd_cloud(const scalar_t* points, int64_t length, int64_t D, int64_t start, int64_t m,
                    double min_norm_sq, int64_t* out) {
  using T = acc_type<scalar_t>;
  for (int64_t j = length; j < m; ++j) out[j] = -1;
  const int64_t count = std::min(m, length);
  if (count == 0) return;
  BlockedCloud<T> cloud;
  cloud.load(points, length, D, T(0));
  std::vector<T> rows(length * D);
  std::vector<char> eligible(length, 1);
  for (int64_t i = 0; i < length; ++i) {
    T norm = T(0);
    for (int64_t d = 0; d < D; ++d) {
      const T v = static_cast<T>(points[i * D + d]);
      rows[i * D + d] = v;
      norm = norm + v * v;
    }
    // Compared in double, as pointnet2_ops compares its float norm with the double literal 1e-3.
    eligible[i] = min_norm_sq < 0 || !(static_cast<double>(norm) <= min_norm_sq);
  }
  // With no eligible point every minimum stays -inf and each further sample is index 0, as in
  // pointnet2_ops and the 3-D kernels.
  fps_anyd_brute_force<kDim, T>(cloud, rows, eligible, start, count, out);
}

}  // namespace

void fps_anyd_cpu_kernel(const at::Tensor& xyz, const std::vector<int64_t>& lens,
                         const std::vector<int64_t>& starts, int64_t m, double min_norm_sq,
                         at::Tensor& idx) {
  const int64_t B = xyz.size(0), N = xyz.size(1), D = xyz.size(2);
  int64_t* out = idx.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, xyz.scalar_type(), "fps_anyd_cpu",
                                  [&] {
    const scalar_t* data = xyz.data_ptr<scalar_t>();
    parallel_chunks(B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const scalar_t* cloud = data + b * N * D;
        int64_t* cloud_out = out + b * m;
        fps_anyd_cloud<0>(cloud, lens[b], D, starts[b], m, min_norm_sq, cloud_out);
      }
    });
  });
}

}  // namespace CPU_CAPABILITY
}  // namespace recon_fast
