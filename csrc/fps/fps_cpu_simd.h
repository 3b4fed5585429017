// The SIMD body of farthest point sampling on the CPU, compiled once per CPU capability
// (fps_cpu.cpp includes it through common/cpu_multiversion.h).
//
// Small clouds: brute force, one SIMD pass per sample that updates the running minimum distance
// and tracks a per-lane argmax at the same time (lanes see increasing indices, so strict `>`
// keeps each lane's lowest index and the final cross-lane reduction breaks ties by index).
// Large clouds: a kd-tree whose nodes remember the largest running minimum below them; a new
// sample only touches nodes whose box is closer to it than that maximum, because no other point
// can have its minimum lowered. Both paths return identical indices.
#include "common/cpu_simd.h"

namespace recon_fast {
namespace CPU_CAPABILITY {
namespace {

// Clouds with at least this many candidate points use the kd-tree (measured crossover on x86).
constexpr int64_t kTreeMinPoints = 8192;
constexpr int32_t kTreeLeafSize = 48;

template <typename T>
void fps_brute_force(const SoaCloud<T>& cloud, const std::vector<char>& eligible, int64_t start,
                     int64_t count, int64_t* out) {
  using V = typename Simd<T>::vec;
  using IV = typename Simd<T>::ivec;
  using I = typename std::remove_reference<decltype(IV{}[0])>::type;
  constexpr int W = Simd<T>::width;
  const int64_t padded = cloud.padded_size();
  constexpr T inf = std::numeric_limits<T>::infinity();
  std::vector<T> mind(padded, -inf);  // -inf: never chosen (padding, excluded points)
  for (int64_t i = 0; i < cloud.size; ++i) mind[i] = eligible[i] ? inf : -inf;

  const IV lane = simd_lanes<T>();
  out[0] = start;
  int64_t last = start;
  for (int64_t j = 1; j < count; ++j) {
    const V px = simd_splat<T>(cloud.x[last]);
    const V py = simd_splat<T>(cloud.y[last]);
    const V pz = simd_splat<T>(cloud.z[last]);
    // Two running maxima (even and odd vectors) so two compare-and-blend chains overlap; each
    // still sees its indices in increasing order.
    V best[2] = {simd_splat<T>(-inf), simd_splat<T>(-inf)};
    IV best_idx[2] = {lane, lane};
    auto visit = [&](int64_t i, int a) {
      const V d = simd_point_dist<2, T>(px - simd_load<T>(&cloud.x[i]),
                                        py - simd_load<T>(&cloud.y[i]),
                                        pz - simd_load<T>(&cloud.z[i]));
      V md = simd_load<T>(&mind[i]);
      md = d < md ? d : md;
      simd_store<T>(&mind[i], md);
      const auto gt = md > best[a];
      best[a] = gt ? md : best[a];
      best_idx[a] = gt ? lane + static_cast<I>(i) : best_idx[a];
    };
    int64_t i = 0;
    for (; i + 2 * W <= padded; i += 2 * W) {
      visit(i, 0);
      visit(i + W, 1);
    }
    if (i < padded) visit(i, 0);
    last = simd_argmax_lowest_index<T>(best, best_idx);
    out[j] = last;
  }
}

// kd-tree FPS state: running minimum per slot and, per node, the largest minimum below it and
// the lowest original index holding that maximum.
template <typename T>
struct TreeFps {
  using V = typename Simd<T>::vec;
  using IV = typename Simd<T>::ivec;
  using I = typename std::remove_reference<decltype(IV{}[0])>::type;
  static constexpr int W = Simd<T>::width;

  const KdTree<T>& tree;
  std::vector<T> mind;
  std::vector<T> node_max;
  std::vector<int64_t> node_arg;

  explicit TreeFps(const KdTree<T>& t)
      : tree(t),
        mind(t.index.size() + KdTree<T>::kSimdPad, std::numeric_limits<T>::infinity()),
        node_max(t.nodes.size(), std::numeric_limits<T>::infinity()),
        node_arg(t.nodes.size(), 0) {}

  // Lowers the running minima of a leaf, a vector of slots at a time, and finds its largest
  // minimum; lanes past the leaf's end keep their values and take no part. Leaf slots follow the
  // original index, so the per-lane strict `>` and the lowest-slot tie-break keep the lowest
  // original index.
  void absorb_leaf(T px, T py, T pz, int32_t id) {
    const auto& node = tree.nodes[id];
    const V vx = simd_splat<T>(px), vy = simd_splat<T>(py), vz = simd_splat<T>(pz);
    const IV lane = simd_lanes<T>();
    const IV end = IV{} + static_cast<I>(node.end);
    V best = simd_splat<T>(-std::numeric_limits<T>::infinity());
    IV best_slot = IV{} + static_cast<I>(node.begin);
    for (int32_t s = node.begin; s < node.end; s += W) {
      const IV slot = lane + static_cast<I>(s);
      const auto inside = slot < end;
      const V d = simd_point_dist<2, T>(vx - simd_load<T>(&tree.x[s]), vy - simd_load<T>(&tree.y[s]),
                                        vz - simd_load<T>(&tree.z[s]));
      const V old = simd_load<T>(&mind[s]);
      const V md = (inside & (d < old)) ? d : old;
      simd_store<T>(&mind[s], md);
      const auto gt = inside & (md > best);
      best = gt ? md : best;
      best_slot = gt ? slot : best_slot;
    }
    T best_val = best[0];
    I slot = best_slot[0];
    for (int l = 1; l < W; ++l) {
      if (best[l] > best_val || (best[l] == best_val && best_slot[l] < slot)) {
        best_val = best[l];
        slot = best_slot[l];
      }
    }
    node_max[id] = best_val;
    node_arg[id] = tree.index[slot];
  }

  void absorb(T px, T py, T pz, int32_t id) {
    const auto& node = tree.nodes[id];
    if (box_lower_bound<2, T>(node, px, py, pz) >= node_max[id]) return;
    if (node.is_leaf()) {
      absorb_leaf(px, py, pz, id);
      return;
    }
    absorb(px, py, pz, node.left);
    absorb(px, py, pz, node.right);
    const T ml = node_max[node.left], mr = node_max[node.right];
    const int64_t al = node_arg[node.left], ar = node_arg[node.right];
    if (ml > mr || (ml == mr && al < ar)) {
      node_max[id] = ml;
      node_arg[id] = al;
    } else {
      node_max[id] = mr;
      node_arg[id] = ar;
    }
  }
};

template <typename T>
void fps_tree(const SoaCloud<T>& cloud, std::vector<int64_t> candidates, int64_t start,
              int64_t count, int64_t* out) {
  KdTree<T> tree;
  tree.build(cloud.x.data(), cloud.y.data(), cloud.z.data(), std::move(candidates),
             kTreeLeafSize);
  TreeFps<T> state(tree);
  out[0] = start;
  int64_t last = start;
  for (int64_t j = 1; j < count; ++j) {
    state.absorb(cloud.x[last], cloud.y[last], cloud.z[last], 0);
    last = state.node_arg[0];
    out[j] = last;
  }
}

template <typename scalar_t>
void fps_cloud(const scalar_t* xyz, int64_t length, int64_t start, int64_t m, double min_norm_sq,
               int64_t* out) {
  using T = acc_type<scalar_t>;
  for (int64_t j = length; j < m; ++j) out[j] = -1;
  const int64_t count = std::min(m, length);
  if (count == 0) return;
  SoaCloud<T> cloud;
  cloud.load(xyz, length, T(0));
  std::vector<char> eligible(length, 1);
  std::vector<int64_t> candidates;
  candidates.reserve(length);
  for (int64_t i = 0; i < length; ++i) {
    const T norm = sq_dist3(cloud.x[i], cloud.y[i], cloud.z[i]);
    // Compared in double, as pointnet2_ops compares its float norm with the double literal 1e-3.
    eligible[i] = min_norm_sq < 0 || !(static_cast<double>(norm) <= min_norm_sq);
    if (eligible[i]) candidates.push_back(i);
  }
  if (count == 1) {
    out[0] = start;
    return;
  }
  if (static_cast<int64_t>(candidates.size()) >= kTreeMinPoints) {
    fps_tree(cloud, std::move(candidates), start, count, out);
  } else if (candidates.empty()) {
    // Nothing can be chosen: like pointnet2_ops, every further sample is index 0.
    out[0] = start;
    for (int64_t j = 1; j < count; ++j) out[j] = 0;
  } else {
    fps_brute_force(cloud, eligible, start, count, out);
  }
}


}  // namespace

void fps_cpu_kernel(const at::Tensor& xyz, const std::vector<int64_t>& lens,
                    const std::vector<int64_t>& starts, int64_t m, double min_norm_sq,
                    at::Tensor& idx) {
  const int64_t B = xyz.size(0), N = xyz.size(1);
  int64_t* out = idx.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, xyz.scalar_type(), "fps_cpu", [&] {
    const scalar_t* data = xyz.data_ptr<scalar_t>();
    parallel_chunks(B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        fps_cloud(data + b * N * 3, lens[b], starts[b], m, min_norm_sq, out + b * m);
      }
    });
  });
}

}  // namespace CPU_CAPABILITY
}  // namespace recon_fast
