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

  // Builds over the points `ids` of the cloud (xs, ys, zs are indexed by original index; fewer
  // than 2^31 points). With several threads and a large cloud (and outside a parallel region) the
  // subtrees below the top levels are built in parallel: the same leaves and boxes, numbered
  // differently.
  void build(const T* xs, const T* ys, const T* zs, std::vector<int64_t> ids, int32_t leaf) {
    leaf_size = std::max<int32_t>(leaf, 1);
    nodes.clear();
    const int64_t n = static_cast<int64_t>(ids.size());
    // Splits keep the order of the points on each side, so leaves come out in index order when
    // the input is in index order (the kernels pass increasing ids).
    if (!std::is_sorted(ids.begin(), ids.end())) std::sort(ids.begin(), ids.end());
    index = std::move(ids);
    x.assign(n + kSimdPad, T(0));
    y.assign(n + kSimdPad, T(0));
    z.assign(n + kSimdPad, T(0));
    if (n == 0) return;
    // Points are moved with their coordinates beside them, between two buffers, one level of
    // splits per pass: every pass reads and writes memory in order.
    std::vector<Point> pts(n), spare(n);
    for (int64_t s = 0; s < n; ++s) {
      const int64_t i = index[s];
      pts[s] = Point{{xs[i], ys[i], zs[i]}, static_cast<int32_t>(i)};
    }
    T lo[3], hi[3];
    bounds(pts.data(), 0, static_cast<int32_t>(n), lo, hi);
    nodes.reserve(static_cast<size_t>(4 * n / leaf_size + 4));
    if (n >= kParallelMinPoints && at::get_num_threads() > 1 && !in_parallel_work()) {
      build_parallel(pts.data(), spare.data(), static_cast<int32_t>(n), lo, hi);
    } else {
      build_node(pts.data(), spare.data(), 0, static_cast<int32_t>(n), lo, hi, nodes);
    }
  }

  bool empty() const { return nodes.empty(); }

 private:
  struct Point {
    T c[3];
    int32_t id;
  };

  // A subtree below the top levels, built on its own into its own node list.
  struct Subtree {
    Point* src;
    Point* dst;
    int32_t begin, end;
    T lo[3], hi[3];
    int32_t parent;  // top node whose child it is
    bool is_left;
    std::vector<Node> nodes;
  };

  // Clouds from this size build their subtrees in parallel, 2^kParallelDepth of them (more
  // subtrees than threads, so a thread that starts late finds the work shared out by then).
  static constexpr int64_t kParallelMinPoints = 16384;
  static constexpr int kParallelDepth = 3;
  static constexpr int kSplitSamples = 31;

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

  // Where a node splits: on the widest axis of `lo`/`hi` (a box around its points: the parent's
  // box cut at the split) at about the median, so a search descends about log2(n / leaf)
  // levels. The value is the median of a strided sample (the exact median only when the sample
  // leaves a side with under a quarter of the points, which also bounds the depth).
  struct Split {
    int axis;
    T value;
    int32_t left;        // points going left: all below `value`, then equal ones in order
    int32_t take_equal;  // how many of the points equal to `value` go left
    // False only when NaN coordinates (compared false with everything) leave a side empty.
    bool splits(int32_t n) const { return left > 0 && left < n; }
  };

  static Split choose_split(const Point* pts, int32_t begin, int32_t end, const T* lo,
                            const T* hi) {
    Split split;
    split.axis = 0;
    for (int a = 1; a < 3; ++a) {
      if (hi[a] - lo[a] > hi[split.axis] - lo[split.axis]) split.axis = a;
    }
    const int32_t n = end - begin;
    split.value = sampled_median(pts, begin, end, split.axis);
    count_split(pts, begin, end, split);
    if (split.left < n / 4 || n - split.left < n / 4) {
      split.value = exact_median(pts, begin, end, split.axis);
      count_split(pts, begin, end, split);
    }
    return split;
  }

  static T sampled_median(const Point* pts, int32_t begin, int32_t end, int axis) {
    const int64_t n = end - begin;
    T sample[kSplitSamples];
    for (int j = 0; j < kSplitSamples; ++j) {
      sample[j] = pts[begin + (2 * j + 1) * n / (2 * kSplitSamples)].c[axis];
    }
    std::nth_element(sample, sample + kSplitSamples / 2, sample + kSplitSamples);
    return sample[kSplitSamples / 2];
  }

  static T exact_median(const Point* pts, int32_t begin, int32_t end, int axis) {
    std::vector<T> values(end - begin);
    for (int32_t s = begin; s < end; ++s) values[s - begin] = pts[s].c[axis];
    std::nth_element(values.begin(), values.begin() + values.size() / 2, values.end());
    return values[values.size() / 2];
  }

  // Sets how many points go left: every one below the value, and as many equal to it as bring
  // the left side to half. Both sides are non-empty: the value is a point's coordinate.
  static void count_split(const Point* pts, int32_t begin, int32_t end, Split& split) {
    int32_t less = 0, equal = 0;
    for (int32_t s = begin; s < end; ++s) {
      const T c = pts[s].c[split.axis];
      less += c < split.value;
      equal += c == split.value;
    }
    const int32_t half = (end - begin) / 2;
    split.take_equal = std::max<int32_t>(0, std::min<int32_t>(half - less, equal));
    split.left = less + split.take_equal;
  }

  // Moves src[begin, end) to dst, the left side first, each side in its original order. No
  // data-dependent branch: the side decides only the address (a branch mispredicts on half of
  // the points).
  static void move_split(const Point* __restrict src, Point* __restrict dst, int32_t begin,
                         int32_t end, const Split& split) {
    int32_t to_left = begin, to_right = begin + split.left, equal_seen = 0;
    for (int32_t s = begin; s < end; ++s) {
      const Point p = src[s];
      const T c = p.c[split.axis];
      const int32_t is_equal = c == split.value;
      const int32_t go_left = static_cast<int32_t>(c < split.value) |
                              (is_equal & static_cast<int32_t>(equal_seen < split.take_equal));
      equal_seen += is_equal;
      dst[to_right + ((to_left - to_right) & -go_left)] = p;
      to_left += go_left;
      to_right += 1 - go_left;
    }
  }

  // A leaf: its points (in index order, see build) go to the permuted arrays. Its box is tight:
  // every face is a point coordinate, what the exactness of the pruning rests on.
  Node make_leaf(const Point* pts, int32_t begin, int32_t end) {
    Node node;
    node.begin = begin;
    node.end = end;
    node.left = node.right = -1;
    bounds(pts, begin, end, node.lo, node.hi);
    for (int32_t s = begin; s < end; ++s) {
      x[s] = pts[s].c[0];
      y[s] = pts[s].c[1];
      z[s] = pts[s].c[2];
      index[s] = pts[s].id;
    }
    return node;
  }

  // A parent's box is the union of its children's (tight as well).
  static void union_box(Node& node, const Node& l, const Node& r) {
    for (int a = 0; a < 3; ++a) {
      node.lo[a] = l.lo[a] < r.lo[a] ? l.lo[a] : r.lo[a];
      node.hi[a] = l.hi[a] > r.hi[a] ? l.hi[a] : r.hi[a];
    }
  }

  // Builds the subtree over src[begin, end) (dst: scratch of the same extent) into `out`, its
  // root first; returns the root's position in `out`.
  int32_t build_node(Point* src, Point* dst, int32_t begin, int32_t end, const T* lo,
                     const T* hi, std::vector<Node>& out) {
    const int32_t id = static_cast<int32_t>(out.size());
    out.push_back(Node{});
    if (end - begin <= leaf_size) {
      out[id] = make_leaf(src, begin, end);
      return id;
    }
    const Split split = choose_split(src, begin, end, lo, hi);
    if (!split.splits(end - begin)) {  // NaN coordinates (checks off): one larger leaf
      out[id] = make_leaf(src, begin, end);
      return id;
    }
    move_split(src, dst, begin, end, split);
    T left_hi[3] = {hi[0], hi[1], hi[2]}, right_lo[3] = {lo[0], lo[1], lo[2]};
    left_hi[split.axis] = split.value;
    right_lo[split.axis] = split.value;
    const int32_t mid = begin + split.left;
    Node node;
    node.begin = begin;
    node.end = end;
    node.left = build_node(dst, src, begin, mid, lo, left_hi, out);
    node.right = build_node(dst, src, mid, end, right_lo, hi, out);
    union_box(node, out[node.left], out[node.right]);
    out[id] = node;
    return id;
  }

  // Splits the top kParallelDepth levels here, builds the subtrees below them in parallel, then
  // appends each subtree's nodes after the top nodes and links them in.
  void build_parallel(Point* pts, Point* spare, int32_t n, const T* lo, const T* hi) {
    std::vector<Subtree> subtrees;
    split_top(pts, spare, 0, n, lo, hi, kParallelDepth, -1, false, subtrees);
    const int32_t top_nodes = static_cast<int32_t>(nodes.size());
    parallel_chunks(static_cast<int64_t>(subtrees.size()), 1, [&](int64_t first, int64_t last) {
      for (int64_t t = first; t < last; ++t) {
        Subtree& sub = subtrees[t];
        sub.nodes.reserve(static_cast<size_t>(4 * (sub.end - sub.begin) / leaf_size + 4));
        build_node(sub.src, sub.dst, sub.begin, sub.end, sub.lo, sub.hi, sub.nodes);
      }
    });
    for (Subtree& sub : subtrees) {
      const int32_t offset = static_cast<int32_t>(nodes.size());
      for (Node node : sub.nodes) {
        if (!node.is_leaf()) {
          node.left += offset;
          node.right += offset;
        }
        nodes.push_back(node);
      }
      if (sub.parent < 0) continue;  // the root itself (not reached from kParallelMinPoints)
      Node& parent = nodes[sub.parent];
      (sub.is_left ? parent.left : parent.right) = offset;
    }
    // Top nodes were created parent before child: in reverse, children's boxes come first.
    for (int32_t id = top_nodes - 1; id >= 0; --id) {
      union_box(nodes[id], nodes[nodes[id].left], nodes[nodes[id].right]);
    }
  }

  // The top levels of build_node, leaving the nodes `depth` levels down (or leaves reached
  // earlier) as subtrees to build.
  void split_top(Point* src, Point* dst, int32_t begin, int32_t end, const T* lo, const T* hi,
                 int depth, int32_t parent, bool is_left, std::vector<Subtree>& subtrees) {
    if (depth > 0 && end - begin > leaf_size) {
      const Split split = choose_split(src, begin, end, lo, hi);
      if (split.splits(end - begin)) {
        const int32_t id = static_cast<int32_t>(nodes.size());
        nodes.push_back(Node{});
        nodes[id].begin = begin;
        nodes[id].end = end;
        if (parent >= 0) (is_left ? nodes[parent].left : nodes[parent].right) = id;
        move_split(src, dst, begin, end, split);
        T left_hi[3] = {hi[0], hi[1], hi[2]}, right_lo[3] = {lo[0], lo[1], lo[2]};
        left_hi[split.axis] = split.value;
        right_lo[split.axis] = split.value;
        const int32_t mid = begin + split.left;
        split_top(dst, src, begin, mid, lo, left_hi, depth - 1, id, true, subtrees);
        split_top(dst, src, mid, end, right_lo, hi, depth - 1, id, false, subtrees);
        return;
      }
    }
    subtrees.push_back(Subtree{src, dst, begin, end, {lo[0], lo[1], lo[2]},
                               {hi[0], hi[1], hi[2]}, parent, is_left, {}});
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
