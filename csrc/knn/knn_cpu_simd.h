// The SIMD body of k nearest neighbours on the CPU, compiled once per CPU capability
// (knn_cpu.cpp includes it through common/cpu_multiversion.h).
//
// Small clouds: brute force. Distances are computed a SIMD vector at a time and compared with the
// current k-th best; only vectors with a lane that beats it reach the (packed-key) insertion, so
// most of the work is the vectorised distance itself. Clouds with many queries are first sorted
// along a Morton curve so each query meets its neighbours first (MortonCloud). Large clouds: a
// kd-tree per cloud, searched with lexicographic (distance, index) pruning. Every path returns
// exactly the brute-force answer.
#include "common/cpu_simd.h"

namespace recon_fast {
namespace CPU_CAPABILITY {
namespace {

// Clouds at least this large use the kd-tree when there are enough queries to repay its build.
constexpr int64_t kTreeMinPoints = 4096;
constexpr int64_t kTreeMinQueries = 64;
constexpr int32_t kTreeLeafSize = 48;  // measured: 48 beat 24 and 32 at N50k, k16
// Below the kd-tree's range, a Morton-sorted scan pays off once a cloud has this many queries.
constexpr int64_t kMortonMinPoints = 128;
constexpr int64_t kMortonMinQueries = 8;
constexpr int64_t kMortonMinK = 8;  // for a few neighbours the plain scan admits little anyway

// Scores one SIMD block of points [i, i + W) against the query and admits the lanes that beat
// the current k-th best. `orig` maps slots to point indices when the cloud was reordered; then
// an equal distance may still win on index, so the prefilter is `<=` and the packed key decides.
template <int Norm, typename T, bool Reordered>
inline void knn_scan_block(const SoaCloud<T>& cloud, const int64_t* orig, int64_t i,
                           typename Simd<T>::vec vx, typename Simd<T>::vec vy,
                           typename Simd<T>::vec vz, TopK<T>& top) {
  using V = typename Simd<T>::vec;
  constexpr int W = Simd<T>::width;
  const V d = simd_point_dist<Norm, T>(vx - simd_load<T>(&cloud.x[i]),
                                        vy - simd_load<T>(&cloud.y[i]),
                                        vz - simd_load<T>(&cloud.z[i]));
  // Padding lanes hold NaN coordinates and always compare false.
  const V worst = simd_splat<T>(top.worst());
  const auto pass = Reordered ? (d <= worst) : (d < worst);
  if (!simd_any(pass)) return;
  for (int l = 0; l < W; ++l) {
    if (!pass[l]) continue;
    const auto key = DistKey<T>::make(d[l], Reordered ? orig[i + l] : i + l);
    if (key < top.worst_key()) top.insert_key(key);
  }
}

// Brute force in index order: a distance equal to the k-th best arrives with a larger index and
// never enters, so the strict prefilter is exact.
template <int Norm, typename T>
void knn_brute_force(const SoaCloud<T>& cloud, T qx, T qy, T qz, TopK<T>& top) {
  constexpr int W = Simd<T>::width;
  const auto vx = simd_splat<T>(qx), vy = simd_splat<T>(qy), vz = simd_splat<T>(qz);
  for (int64_t i = 0; i < cloud.padded_size(); i += W) {
    knn_scan_block<Norm, T, false>(cloud, nullptr, i, vx, vy, vz, top);
  }
}

// A cloud sorted along a Morton (Z-order) curve. A query scans blocks outward from its own
// position on the curve, so the first blocks it sees hold its spatial neighbours, the k-th best
// distance is tight almost at once, and nearly every later block is rejected by one SIMD compare
// (in index order a query admits ~k ln(N/k) candidates, each a mispredicted branch and an
// insertion). Every block is still scanned: the answer is the exact brute-force one.
template <typename T>
struct MortonCloud {
  SoaCloud<T> cloud;
  std::vector<int64_t> orig;
  std::vector<uint32_t> codes;
  MortonGrid<T> grid;

  uint32_t code_of(T x, T y, T z) const { return grid.code(x, y, z); }

  void build(const SoaCloud<T>& src) {
    const int64_t n = src.size;
    grid.fit(src.x.data(), src.y.data(), src.z.data(), n);
    std::vector<uint64_t> keyed(n);
    for (int64_t i = 0; i < n; ++i) {
      keyed[i] = (static_cast<uint64_t>(code_of(src.x[i], src.y[i], src.z[i])) << 32) |
                 static_cast<uint64_t>(i);
    }
    morton_sort(keyed);
    const T nan = std::numeric_limits<T>::quiet_NaN();
    const int64_t padded = src.padded_size();
    cloud.size = n;
    cloud.x.assign(padded, nan);
    cloud.y.assign(padded, nan);
    cloud.z.assign(padded, nan);
    orig.resize(n);
    codes.resize(n);
    for (int64_t s = 0; s < n; ++s) {
      const int64_t i = static_cast<int64_t>(keyed[s] & 0xffffffffu);
      orig[s] = i;
      codes[s] = static_cast<uint32_t>(keyed[s] >> 32);
      cloud.x[s] = src.x[i];
      cloud.y[s] = src.y[i];
      cloud.z[s] = src.z[i];
    }
  }
};

template <int Norm, typename T>
void knn_morton(const MortonCloud<T>& m, T qx, T qy, T qz, TopK<T>& top) {
  constexpr int W = Simd<T>::width;
  const auto vx = simd_splat<T>(qx), vy = simd_splat<T>(qy), vz = simd_splat<T>(qz);
  const int64_t blocks = m.cloud.padded_size() / W;
  const int64_t at = std::lower_bound(m.codes.begin(), m.codes.end(), m.code_of(qx, qy, qz)) -
                     m.codes.begin();
  const int64_t first = std::min<int64_t>(at / W, blocks - 1);
  knn_scan_block<Norm, T, true>(m.cloud, m.orig.data(), first * W, vx, vy, vz, top);
  for (int64_t step = 1; first - step >= 0 || first + step < blocks; ++step) {
    if (first + step < blocks) {
      knn_scan_block<Norm, T, true>(m.cloud, m.orig.data(), (first + step) * W, vx, vy, vz, top);
    }
    if (first - step >= 0) {
      knn_scan_block<Norm, T, true>(m.cloud, m.orig.data(), (first - step) * W, vx, vy, vz, top);
    }
  }
}

// kd-tree search of one query with vectorised leaves: a leaf's slots are scored a vector at a
// time and only lanes within the current k-th best reach the packed-key insertion. Leaf slots
// are in index order but leaves are visited nearest first, so an equal distance may still win on
// index: the prefilter is `<=` and the key decides.
template <int Norm, typename T>
void kdtree_knn_simd(const KdTree<T>& tree, T qx, T qy, T qz, TopK<T>& top) {
  using V = typename Simd<T>::vec;
  using IV = typename Simd<T>::ivec;
  using I = typename std::remove_reference<decltype(IV{}[0])>::type;
  constexpr int W = Simd<T>::width;
  if (tree.empty()) return;
  const V vx = simd_splat<T>(qx), vy = simd_splat<T>(qy), vz = simd_splat<T>(qz);
  const IV lane = simd_lanes<T>();
  // Nodes wait on the stack with their box's lower bound, computed once when pushed.
  int32_t stack[128];
  T stack_bound[128];
  int sp = 0;
  stack[sp] = 0;
  stack_bound[sp++] = box_lower_bound<Norm, T>(tree.nodes[0], qx, qy, qz);
  while (sp > 0) {
    --sp;
    // A box whose bound equals the current worst can still hold a tie with a lower index.
    if (top.full() && stack_bound[sp] > top.worst()) continue;
    const auto& node = tree.nodes[stack[sp]];
    if (node.is_leaf()) {
      const IV end = IV{} + static_cast<I>(node.end);
      for (int32_t s = node.begin; s < node.end; s += W) {
        const V d = simd_point_dist<Norm, T>(vx - simd_load<T>(&tree.x[s]),
                                              vy - simd_load<T>(&tree.y[s]),
                                              vz - simd_load<T>(&tree.z[s]));
        const auto pass = ((lane + static_cast<I>(s)) < end) & (d <= simd_splat<T>(top.worst()));
        if (!simd_any(pass)) continue;
        for (int l = 0; l < W; ++l) {
          if (!pass[l]) continue;
          const auto key = DistKey<T>::make(d[l], tree.index[s + l]);
          if (key < top.worst_key()) top.insert_key(key);
        }
      }
      continue;
    }
    // The farther child first, so the nearer is searched first.
    const T bl = box_lower_bound<Norm, T>(tree.nodes[node.left], qx, qy, qz);
    const T br = box_lower_bound<Norm, T>(tree.nodes[node.right], qx, qy, qz);
    const bool left_first = bl <= br;
    stack[sp] = left_first ? node.right : node.left;
    stack_bound[sp++] = left_first ? br : bl;
    stack[sp] = left_first ? node.left : node.right;
    stack_bound[sp++] = left_first ? bl : br;
  }
}

// Queries of a kd-tree cloud in Morton order of their positions: consecutive queries then
// search the same leaves, which stay in the first-level cache.
template <typename T, typename scalar_t>
std::vector<int32_t> spatial_query_order(const scalar_t* q, int64_t count) {
  std::vector<T> xs(count), ys(count), zs(count);
  for (int64_t i = 0; i < count; ++i) {
    xs[i] = static_cast<T>(q[3 * i]);
    ys[i] = static_cast<T>(q[3 * i + 1]);
    zs[i] = static_cast<T>(q[3 * i + 2]);
  }
  MortonGrid<T> grid;
  grid.fit(xs.data(), ys.data(), zs.data(), count);
  std::vector<uint64_t> keyed(count);
  for (int64_t i = 0; i < count; ++i) {
    keyed[i] = (static_cast<uint64_t>(grid.code(xs[i], ys[i], zs[i])) << 32) |
               static_cast<uint64_t>(i);
  }
  morton_sort(keyed);
  std::vector<int32_t> order(count);
  for (int64_t s = 0; s < count; ++s) order[s] = static_cast<int32_t>(keyed[s] & 0xffffffffu);
  return order;
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
  std::vector<MortonCloud<T>> sorted(B);
  std::vector<char> use_tree(B), use_morton(B);
  std::vector<std::vector<int32_t>> query_order(B);
  parallel_chunks(B, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      clouds[b].load(p + b * N * 3, plens[b], nan);
      use_tree[b] = plens[b] >= kTreeMinPoints && qlens[b] >= kTreeMinQueries;
      use_morton[b] = !use_tree[b] && plens[b] >= kMortonMinPoints &&
                      qlens[b] >= kMortonMinQueries && k >= kMortonMinK && k < plens[b];
      if (use_morton[b]) sorted[b].build(clouds[b]);
      if (use_tree[b]) {
        std::vector<int64_t> ids(plens[b]);
        for (int64_t i = 0; i < plens[b]; ++i) ids[i] = i;
        trees[b].build(clouds[b].x.data(), clouds[b].y.data(), clouds[b].z.data(),
                       std::move(ids), kTreeLeafSize);
        query_order[b] = spatial_query_order<T>(q + b * M * 3, qlens[b]);
      }
    }
  });

  // Chunks of at least 8 queries: threads then rarely contend for the shared counter.
  const int64_t grain = std::max<int64_t>(8, 4096 / std::max<int64_t>(N, 1));
  parallel_chunks(B * M, grain, [&](int64_t begin, int64_t end) {
    std::vector<typename TopK<T>::Key> keys(k);
    for (int64_t chunk_bm = begin; chunk_bm < end; ++chunk_bm) {
      const int64_t b = chunk_bm / M, chunk_i = chunk_bm % M;
      const int64_t i = use_tree[b] && chunk_i < qlens[b] ? query_order[b][chunk_i] : chunk_i;
      const int64_t bm = b * M + i;
      TopK<T> top(keys.data(), k);
      if (i < qlens[b]) {
        const scalar_t* qp = q + bm * 3;
        const T qx = static_cast<T>(qp[0]), qy = static_cast<T>(qp[1]),
                qz = static_cast<T>(qp[2]);
        if (use_tree[b]) {
          kdtree_knn_simd<Norm, T>(trees[b], qx, qy, qz, top);
        } else if (use_morton[b]) {
          knn_morton<Norm, T>(sorted[b], qx, qy, qz, top);
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

void knn_cpu_kernel(const at::Tensor& query, const at::Tensor& points,
                    const std::vector<int64_t>& qlens, const std::vector<int64_t>& plens,
                    int64_t k, int64_t norm, at::Tensor& dist, at::Tensor& idx) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, query.scalar_type(), "knn_cpu", [&] {
    if (norm == 2) {
      knn_impl<scalar_t, 2>(query, points, qlens, plens, k, dist, idx);
    } else {
      knn_impl<scalar_t, 1>(query, points, qlens, plens, k, dist, idx);
    }
  });
}

}  // namespace CPU_CAPABILITY
}  // namespace recon_fast
