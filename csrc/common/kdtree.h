// A small kd-tree over one 3D cloud, used by the CPU kernels once clouds are large enough that
// brute force (O(N) per query or per FPS step) stops paying off.
//
// Points are permuted so that every node covers a contiguous slice [begin, end) of the
// structure-of-arrays coordinates; `index` maps a slot back to the point's original index.
// Every search built on it returns exactly what brute force returns (ties broken by the
// original index), because pruning uses bounding-box lower bounds that are, in floating point,
// never larger than the distance computed for any point inside the box: box faces are point
// coordinates and rounding is monotonic.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include "common/cpu_utils.h"

namespace recon_fast {

template <typename T>
struct KdTree {
  struct Node {
    T lo[3], hi[3];
    int32_t begin, end;   // slice of the permuted arrays
    int32_t left, right;  // children, -1 for a leaf
    bool is_leaf() const { return left < 0; }
  };

  // Widest vector of T (AVX-512 floats): the padding after the permuted coordinates.
  static constexpr int64_t kSimdPad = 16;

  std::vector<T> x, y, z;        // permuted coordinates (+ kSimdPad zeros)
  std::vector<int64_t> index;    // original index of each slot
  std::vector<Node> nodes;       // nodes[0] is the root (when not empty)
  int32_t leaf_size = 32;

  // Builds over the points `ids` of the cloud (xs, ys, zs are indexed by original index).
  void build(const T* xs, const T* ys, const T* zs, std::vector<int64_t> ids, int32_t leaf) {
    leaf_size = std::max<int32_t>(leaf, 1);
    nodes.clear();
    const int64_t n = static_cast<int64_t>(ids.size());
    index = std::move(ids);
    x.assign(n + kSimdPad, T(0));
    y.assign(n + kSimdPad, T(0));
    z.assign(n + kSimdPad, T(0));
    if (n == 0) return;
    // Points are partitioned with their coordinates beside them: the median selections then
    // read memory in order instead of chasing indices into the coordinate arrays.
    std::vector<Point> pts(n);
    for (int64_t s = 0; s < n; ++s) {
      const int64_t i = index[s];
      pts[s] = Point{{xs[i], ys[i], zs[i]}, i};
    }
    T lo[3], hi[3];
    bounds(pts.data(), 0, static_cast<int32_t>(n), lo, hi);
    nodes.reserve(static_cast<size_t>(4 * n / leaf_size + 4));
    build_node(pts.data(), 0, static_cast<int32_t>(n), lo, hi);
    for (int64_t s = 0; s < n; ++s) {
      x[s] = pts[s].c[0];
      y[s] = pts[s].c[1];
      z[s] = pts[s].c[2];
      index[s] = pts[s].id;
    }
  }

  bool empty() const { return nodes.empty(); }

 private:
  struct Point {
    T c[3];
    int64_t id;
  };

  static void bounds(const Point* pts, int32_t begin, int32_t end, T* lo, T* hi) {
    for (int a = 0; a < 3; ++a) lo[a] = hi[a] = pts[begin].c[a];
    for (int32_t s = begin + 1; s < end; ++s) {
      for (int a = 0; a < 3; ++a) {
        const T v = pts[s].c[a];
        lo[a] = v < lo[a] ? v : lo[a];
        hi[a] = v > hi[a] ? v : hi[a];
      }
    }
  }

  // Splits at the median of the widest axis of `lo`/`hi`, a box around the node's points (the
  // parent's box cut at the split): balanced nodes, so a search descends log2(n / leaf) levels.
  // The boxes stored for pruning are tight: a leaf's from its points, a parent's the union of
  // its children's, so every face is a point coordinate (what the exactness of the pruning
  // rests on).
  int32_t build_node(Point* pts, int32_t begin, int32_t end, const T* lo, const T* hi) {
    const int32_t id = static_cast<int32_t>(nodes.size());
    nodes.push_back(Node{});
    Node node;
    node.begin = begin;
    node.end = end;
    node.left = node.right = -1;
    if (end - begin <= leaf_size) {
      // Inside a leaf, slots follow the original index, so a vectorised leaf scan that keeps
      // the first of equal candidates keeps the lowest index, as brute force does.
      std::sort(pts + begin, pts + end, [](const Point& a, const Point& b) { return a.id < b.id; });
      bounds(pts, begin, end, node.lo, node.hi);
      nodes[id] = node;
      return id;
    }
    int axis = 0;
    for (int a = 1; a < 3; ++a) {
      if (hi[a] - lo[a] > hi[axis] - lo[axis]) axis = a;
    }
    const int32_t mid = begin + (end - begin) / 2;
    std::nth_element(pts + begin, pts + mid, pts + end,
                     [axis](const Point& a, const Point& b) { return a.c[axis] < b.c[axis]; });
    const T split = pts[mid].c[axis];
    T left_hi[3] = {hi[0], hi[1], hi[2]}, right_lo[3] = {lo[0], lo[1], lo[2]};
    left_hi[axis] = split;
    right_lo[axis] = split;
    node.left = build_node(pts, begin, mid, lo, left_hi);
    node.right = build_node(pts, mid, end, right_lo, hi);
    const Node& l = nodes[node.left];
    const Node& r = nodes[node.right];
    for (int a = 0; a < 3; ++a) {
      node.lo[a] = l.lo[a] < r.lo[a] ? l.lo[a] : r.lo[a];
      node.hi[a] = l.hi[a] > r.hi[a] ? l.hi[a] : r.hi[a];
    }
    nodes[id] = node;
    return id;
  }
};

// Lower bound of the distance from (px, py, pz) to any point inside the node's box.
template <int Norm, typename T>
inline T box_lower_bound(const typename KdTree<T>::Node& node, T px, T py, T pz) {
  const T p[3] = {px, py, pz};
  T gap[3];
  for (int a = 0; a < 3; ++a) {
    const T below = node.lo[a] - p[a];
    const T above = p[a] - node.hi[a];
    gap[a] = below > 0 ? below : (above > 0 ? above : T(0));
  }
  return point_dist<Norm>(gap[0], gap[1], gap[2]);
}

// A (distance, index) pair packed into one unsigned integer whose order is the lexicographic
// order of the pair: distances are >= 0, and the bit patterns of non-negative IEEE floats sort
// like the values. One integer compare then decides admission and ties, and sorted insertion
// moves one array instead of two.
template <typename T>
struct DistKey;
template <>
struct DistKey<float> {
  using type = uint64_t;
  static type make(float d, int64_t i) {
    uint32_t bits;
    __builtin_memcpy(&bits, &d, sizeof(bits));
    return (static_cast<uint64_t>(bits) << 32) | static_cast<uint32_t>(i);
  }
  static float dist(type key) {
    const uint32_t bits = static_cast<uint32_t>(key >> 32);
    float d;
    __builtin_memcpy(&d, &bits, sizeof(d));
    return d;
  }
  static int64_t index(type key) { return static_cast<int64_t>(key & 0xffffffffu); }
};
template <>
struct DistKey<double> {
  using type = unsigned __int128;
  static type make(double d, int64_t i) {
    uint64_t bits;
    __builtin_memcpy(&bits, &d, sizeof(bits));
    return (static_cast<type>(bits) << 64) | static_cast<uint64_t>(i);
  }
  static double dist(type key) {
    const uint64_t bits = static_cast<uint64_t>(key >> 64);
    double d;
    __builtin_memcpy(&d, &bits, sizeof(d));
    return d;
  }
  static int64_t index(type key) { return static_cast<int64_t>(static_cast<uint64_t>(key)); }
};

// The k best (distance, index) pairs seen so far, kept sorted ascending (ties by index).
template <typename T>
struct TopK {
  using Key = typename DistKey<T>::type;
  Key* keys;  // caller-provided storage for k keys
  int64_t k;
  int64_t count = 0;

  // Unused slots hold the largest key, so insertion needs no special case for a partial list.
  TopK(Key* storage, int64_t kk) : keys(storage), k(kk) {
    for (int64_t j = 0; j < k; ++j) keys[j] = ~Key(0);
  }

  bool full() const { return count == k; }
  Key worst_key() const { return keys[k - 1]; }
  T worst() const { return full() ? DistKey<T>::dist(keys[k - 1]) : std::numeric_limits<T>::infinity(); }
  bool accepts(T d, int64_t i) const { return DistKey<T>::make(d, i) < worst_key(); }

  void insert(T d, int64_t i) { insert_key(DistKey<T>::make(d, i)); }

  void insert_key(Key key) {
    // Sorted insertion without data-dependent branches (they mispredict on most admissions):
    // slot j keeps keys[j] if smaller, else takes max(key, keys[j - 1]). Walking down from the
    // end reads keys[j - 1] before it is overwritten.
    const int64_t top_slot = count < k ? count : k - 1;
    for (int64_t j = top_slot; j > 0; --j) {
      const Key cur = keys[j], prev = keys[j - 1];
      keys[j] = cur < key ? cur : (prev > key ? prev : key);
    }
    keys[0] = keys[0] < key ? keys[0] : key;
    count += count < k;
  }

  T dist(int64_t j) const { return DistKey<T>::dist(keys[j]); }
  int64_t index(int64_t j) const { return DistKey<T>::index(keys[j]); }
};

// Pushes a node's children on a search stack, the farther first, so the nearer is searched
// first.
template <int Norm, typename T>
inline void push_children_nearer_last(const KdTree<T>& tree, const typename KdTree<T>::Node& node,
                                      T qx, T qy, T qz, int32_t* stack, int& sp) {
  const T bl = box_lower_bound<Norm, T>(tree.nodes[node.left], qx, qy, qz);
  const T br = box_lower_bound<Norm, T>(tree.nodes[node.right], qx, qy, qz);
  if (bl <= br) {
    stack[sp++] = node.right;
    stack[sp++] = node.left;
  } else {
    stack[sp++] = node.left;
    stack[sp++] = node.right;
  }
}

// k-nearest-neighbour search of one query in the tree, results merged into `top`.
template <int Norm, typename T>
void kdtree_knn(const KdTree<T>& tree, T qx, T qy, T qz, TopK<T>& top) {
  if (tree.empty()) return;
  int32_t stack[128];
  int sp = 0;
  stack[sp++] = 0;
  while (sp > 0) {
    const auto& node = tree.nodes[stack[--sp]];
    const T bound = box_lower_bound<Norm, T>(node, qx, qy, qz);
    // A box whose bound equals the current worst can still hold a tie with a lower index.
    if (top.full() && bound > top.worst()) continue;
    if (node.is_leaf()) {
      for (int32_t s = node.begin; s < node.end; ++s) {
        const T d = point_dist<Norm>(qx - tree.x[s], qy - tree.y[s], qz - tree.z[s]);
        if (top.accepts(d, tree.index[s])) top.insert(d, tree.index[s]);
      }
      continue;
    }
    push_children_nearer_last<Norm>(tree, node, qx, qy, qz, stack, sp);
  }
}

}  // namespace recon_fast
