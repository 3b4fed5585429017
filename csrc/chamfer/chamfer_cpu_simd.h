// The SIMD body of the Chamfer nearest neighbours on the CPU, compiled once per CPU capability
// (chamfer_cpu.cpp includes it through common/cpu_multiversion.h).
//
// Each lane of a vector holds one query point and scans the other cloud in index order, one
// broadcast point at a time, keeping its own running minimum: there is no cross-lane reduction,
// strict `<` keeps the lowest index, and several query vectors share each broadcast so their
// compare-and-blend chains overlap. The two directions are two such passes (twice the distances
// of a fused pass, but no per-row reductions, which cost more than the distances on the 32x32
// patches of the pretraining loss). The distance of the pair is formed as dist(q - p), which
// for both norms is bit for bit dist(p - q), so either direction matches the reference.
// Large pairs (whose brute-force product exceeds kTreeMinProduct): a kd-tree per cloud and exact
// nearest-neighbour queries both ways.
#include "common/cpu_simd.h"

namespace recon_fast {
namespace CPU_CAPABILITY {
namespace {

// Pairs with more than this many point pairs use kd-trees; the brute force's reach grows with
// the vector width (measured: 2048^2 pairs are faster brute force with 8 and 16 float lanes,
// with a kd-tree with 4).
constexpr int64_t kTreeMinProduct = int64_t(RECON_FAST_SIMD_BYTES) << 18;
constexpr int32_t kTreeLeafSize = 16;
// Queries per work item: big clouds are split so one large pair still uses every thread.
constexpr int64_t kQueryChunk = 256;

// Nearest `to` point of the queries [lo, hi) of `from` (Blocks vectors of queries at a time).
template <int Norm, int Blocks, typename T, typename scalar_t>
void nearest_lanes(const SoaCloud<T>& from, int64_t lo, const SoaCloud<T>& to, scalar_t* dist,
                   int64_t* idx, int64_t hi) {
  using V = typename Simd<T>::vec;
  using IV = typename Simd<T>::ivec;
  using I = typename std::remove_reference<decltype(IV{}[0])>::type;
  constexpr int W = Simd<T>::width;
  V qx[Blocks], qy[Blocks], qz[Blocks], best[Blocks];
  IV arg[Blocks];
  for (int b = 0; b < Blocks; ++b) {
    qx[b] = simd_load<T>(&from.x[lo + b * W]);
    qy[b] = simd_load<T>(&from.y[lo + b * W]);
    qz[b] = simd_load<T>(&from.z[lo + b * W]);
    best[b] = simd_splat<T>(std::numeric_limits<T>::infinity());
    arg[b] = IV{} - 1;
  }
  for (int64_t j = 0; j < to.size; ++j) {
    const V px = simd_splat<T>(to.x[j]), py = simd_splat<T>(to.y[j]), pz = simd_splat<T>(to.z[j]);
    const IV jv = IV{} + static_cast<I>(j);
    for (int b = 0; b < Blocks; ++b) {
      const V d = simd_point_dist<Norm, T>(qx[b] - px, qy[b] - py, qz[b] - pz);
      // `d == d` lets a first finite-or-infinite candidate in; NaN (padding lanes, NaN input)
      // never enters, and such a query reports index -1.
      const auto lt = (d < best[b]) | ((arg[b] < 0) & (d == d));
      best[b] = lt ? d : best[b];
      arg[b] = lt ? jv : arg[b];
    }
  }
  for (int b = 0; b < Blocks; ++b) {
    for (int l = 0; l < W && lo + b * W + l < hi; ++l) {
      const int64_t i = lo + b * W + l;
      dist[i] = static_cast<scalar_t>(arg[b][l] < 0 ? T(0) : best[b][l]);
      idx[i] = arg[b][l];
    }
  }
}

// Nearest `to` point of every query in [lo, hi) of `from`.
template <int Norm, typename T, typename scalar_t>
void nearest_brute_force(const SoaCloud<T>& from, int64_t lo, int64_t hi, const SoaCloud<T>& to,
                         scalar_t* dist, int64_t* idx) {
  constexpr int W = Simd<T>::width;
  constexpr int kBlocks = kRegisterBlocks;
  int64_t i = lo;
  for (; i + kBlocks * W <= hi; i += kBlocks * W) {
    nearest_lanes<Norm, kBlocks>(from, i, to, dist, idx, hi);
  }
  // The tail: as many vectors as it needs, up to kBlocks (the cloud is padded to whole vectors).
  static_assert(kBlocks <= 4, "the tail below handles up to four vectors");
  switch ((hi - i + W - 1) / W) {
    case 4: nearest_lanes<Norm, 4>(from, i, to, dist, idx, hi); break;
    case 3: nearest_lanes<Norm, 3>(from, i, to, dist, idx, hi); break;
    case 2: nearest_lanes<Norm, 2>(from, i, to, dist, idx, hi); break;
    case 1: nearest_lanes<Norm, 1>(from, i, to, dist, idx, hi); break;
    default: break;
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

template <typename T>
KdTree<T> build_tree(const SoaCloud<T>& cloud) {
  std::vector<int64_t> ids(cloud.size);
  std::iota(ids.begin(), ids.end(), int64_t(0));
  KdTree<T> tree;
  tree.build(cloud.x.data(), cloud.y.data(), cloud.z.data(), std::move(ids), kTreeLeafSize);
  return tree;
}

// One direction of one pair: the queries are `from`, the candidates `to`.
template <typename scalar_t>
struct Direction {
  const scalar_t* from;
  int64_t from_len;
  const scalar_t* to;
  int64_t to_len;
  scalar_t* dist;
  int64_t* idx;
};

template <typename scalar_t, int Norm>
void chamfer_impl(const at::Tensor& x, const at::Tensor& y, const std::vector<int64_t>& xl,
                  const std::vector<int64_t>& yl, at::Tensor& dxy, at::Tensor& dyx,
                  at::Tensor& ixy, at::Tensor& iyx) {
  using T = acc_type<scalar_t>;
  const int64_t B = x.size(0), N = x.size(1), M = y.size(1);
  const scalar_t* xp = x.data_ptr<scalar_t>();
  const scalar_t* yp = y.data_ptr<scalar_t>();
  scalar_t* dxy_p = dxy.data_ptr<scalar_t>();
  scalar_t* dyx_p = dyx.data_ptr<scalar_t>();
  int64_t* ixy_p = ixy.data_ptr<int64_t>();
  int64_t* iyx_p = iyx.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = xl[b]; i < N; ++i) dxy_p[b * N + i] = scalar_t(0), ixy_p[b * N + i] = -1;
    for (int64_t j = yl[b]; j < M; ++j) dyx_p[b * M + j] = scalar_t(0), iyx_p[b * M + j] = -1;
  }
  // Work items: (pair, direction, chunk of kQueryChunk queries).
  std::vector<Direction<scalar_t>> dirs;
  std::vector<std::pair<int64_t, int64_t>> items;  // (direction, first query)
  std::vector<char> use_tree;
  for (int64_t b = 0; b < B; ++b) {
    const bool tree = xl[b] * yl[b] >= kTreeMinProduct;
    dirs.push_back({xp + b * N * 3, xl[b], yp + b * M * 3, yl[b], dxy_p + b * N, ixy_p + b * N});
    dirs.push_back({yp + b * M * 3, yl[b], xp + b * N * 3, xl[b], dyx_p + b * M, iyx_p + b * M});
    use_tree.push_back(tree);
    use_tree.push_back(tree);
  }
  for (int64_t d = 0; d < static_cast<int64_t>(dirs.size()); ++d) {
    for (int64_t lo = 0; lo < dirs[d].from_len; lo += kQueryChunk) items.push_back({d, lo});
  }
  // Trees of large pairs, built once: the tree of direction d indexes its `to` cloud.
  std::vector<KdTree<T>> trees(dirs.size());
  parallel_chunks(static_cast<int64_t>(dirs.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t d = begin; d < end; ++d) {
      if (!use_tree[d]) continue;
      SoaCloud<T> to;
      to.load(dirs[d].to, dirs[d].to_len, T(0));
      trees[d] = build_tree(to);
    }
  });
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(N + M, 1));
  parallel_chunks(static_cast<int64_t>(items.size()), grain, [&](int64_t begin, int64_t end) {
    SoaCloud<T> from, to;
    int64_t loaded = -1;
    for (int64_t t = begin; t < end; ++t) {
      const auto [d, lo] = items[t];
      const Direction<scalar_t>& dir = dirs[d];
      const int64_t hi = std::min(dir.from_len, lo + kQueryChunk);
      if (use_tree[d]) {
        nearest_with_tree<Norm, scalar_t>(trees[d], dir.from + lo * 3, hi - lo, dir.dist + lo,
                                          dir.idx + lo);
        continue;
      }
      if (loaded != d) {
        const T nan = std::numeric_limits<T>::quiet_NaN();
        from.load(dir.from, dir.from_len, nan);
        to.load(dir.to, dir.to_len, nan);
        loaded = d;
      }
      nearest_brute_force<Norm>(from, lo, hi, to, dir.dist, dir.idx);
    }
  });
}

}  // namespace

void chamfer_cpu_kernel(const at::Tensor& x, const at::Tensor& y, const std::vector<int64_t>& xl,
                        const std::vector<int64_t>& yl, int64_t norm, at::Tensor& dxy,
                        at::Tensor& dyx, at::Tensor& ixy, at::Tensor& iyx) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "chamfer_cpu", [&] {
    if (norm == 2) {
      chamfer_impl<scalar_t, 2>(x, y, xl, yl, dxy, dyx, ixy, iyx);
    } else {
      chamfer_impl<scalar_t, 1>(x, y, xl, yl, dxy, dyx, ixy, iyx);
    }
  });
}

}  // namespace CPU_CAPABILITY
}  // namespace recon_fast
