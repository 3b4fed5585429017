// Farthest point sampling on the CPU.
//
// Small clouds: brute force, one SIMD pass per sample that updates the running minimum distance
// and tracks a per-lane argmax at the same time (lanes see increasing indices, so strict `>`
// keeps each lane's lowest index and the final cross-lane reduction breaks ties by index).
// Large clouds: a kd-tree whose nodes remember the largest running minimum below them; a new
// sample only touches nodes whose box is closer to it than that maximum, because no other point
// can have its minimum lowered. Both paths return identical indices.
#include "fps/fps.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <limits>
#include <type_traits>
#include <vector>

#include "common/checks.h"
#include "common/cpu_utils.h"
#include "common/kdtree.h"

namespace recon_fast {
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

  IV lane;
  for (int l = 0; l < W; ++l) lane[l] = static_cast<I>(l);
  out[0] = start;
  int64_t last = start;
  for (int64_t j = 1; j < count; ++j) {
    const V px = simd_splat<T>(cloud.x[last]);
    const V py = simd_splat<T>(cloud.y[last]);
    const V pz = simd_splat<T>(cloud.z[last]);
    V best = simd_splat<T>(-inf);
    IV best_idx = lane;
    IV cur_idx = lane;
    const IV step = lane * 0 + static_cast<I>(W);
    for (int64_t i = 0; i < padded; i += W) {
      const V d = sq_dist3(px - simd_load<T>(&cloud.x[i]), py - simd_load<T>(&cloud.y[i]),
                           pz - simd_load<T>(&cloud.z[i]));
      V md = simd_load<T>(&mind[i]);
      md = d < md ? d : md;
      simd_store<T>(&mind[i], md);
      const auto gt = md > best;
      best = gt ? md : best;
      best_idx = gt ? cur_idx : best_idx;
      cur_idx += step;
    }
    T best_val = best[0];
    I best_i = best_idx[0];
    for (int l = 1; l < W; ++l) {
      if (best[l] > best_val || (best[l] == best_val && best_idx[l] < best_i)) {
        best_val = best[l];
        best_i = best_idx[l];
      }
    }
    last = static_cast<int64_t>(best_i);
    out[j] = last;
  }
}

// kd-tree FPS state: running minimum per slot and, per node, the largest minimum below it and
// the lowest original index holding that maximum.
template <typename T>
struct TreeFps {
  const KdTree<T>& tree;
  std::vector<T> mind;
  std::vector<T> node_max;
  std::vector<int64_t> node_arg;

  explicit TreeFps(const KdTree<T>& t)
      : tree(t),
        mind(t.index.size(), std::numeric_limits<T>::infinity()),
        node_max(t.nodes.size(), std::numeric_limits<T>::infinity()),
        node_arg(t.nodes.size(), 0) {}

  void absorb(T px, T py, T pz, int32_t id) {
    const auto& node = tree.nodes[id];
    if (box_lower_bound<2, T>(node, px, py, pz) >= node_max[id]) return;
    if (node.is_leaf()) {
      T best = -std::numeric_limits<T>::infinity();
      int64_t arg = 0;
      for (int32_t s = node.begin; s < node.end; ++s) {
        const T d = sq_dist3(px - tree.x[s], py - tree.y[s], pz - tree.z[s]);
        const T md = d < mind[s] ? d : mind[s];
        mind[s] = md;
        const int64_t orig = tree.index[s];
        if (md > best || (md == best && orig < arg)) {
          best = md;
          arg = orig;
        }
      }
      node_max[id] = best;
      node_arg[id] = arg;
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

void check_fps_args(const at::Tensor& xyz, const at::Tensor& lengths, int64_t m,
                    const at::Tensor& start_idx) {
  check_points(xyz, "xyz");
  check_lengths(lengths, "lengths", xyz, "xyz");
  check_lengths(start_idx, "start_idx", xyz, "xyz");
  TORCH_CHECK_VALUE(m >= 0 && m <= xyz.size(1), "m (number of samples) must be in [0, N] = [0, ",
                    xyz.size(1), "] for xyz of shape ", shape_str(xyz), ", got ", m);
}

at::Tensor fps_cpu(const at::Tensor& xyz_in, const at::Tensor& lengths, int64_t m,
                   const at::Tensor& start_idx, double min_norm_sq) {
  check_fps_args(xyz_in, lengths, m, start_idx);
  const at::Tensor xyz = xyz_in.contiguous();
  const int64_t B = xyz.size(0), N = xyz.size(1);
  const std::vector<int64_t> lens = read_lengths(lengths, N, "lengths");
  const std::vector<int64_t> starts = read_lengths(start_idx, N, "start_idx");
  for (int64_t b = 0; b < B; ++b) {
    TORCH_CHECK_VALUE(lens[b] == 0 || starts[b] < lens[b], "start_idx[", b, "] = ", starts[b],
                      " must be smaller than lengths[", b, "] = ", lens[b]);
  }
  at::Tensor idx = at::empty({B, m}, xyz.options().dtype(at::kLong));
  if (B == 0 || m == 0) return idx;
  int64_t* out = idx.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, xyz.scalar_type(), "fps_cpu", [&] {
    const scalar_t* data = xyz.data_ptr<scalar_t>();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        fps_cloud(data + b * N * 3, lens[b], starts[b], m, min_norm_sq, out + b * m);
      }
    });
  });
  return idx;
}

TORCH_LIBRARY_IMPL(recon_fast, CPU, m) { m.impl("fps", &fps_cpu); }

}  // namespace recon_fast
