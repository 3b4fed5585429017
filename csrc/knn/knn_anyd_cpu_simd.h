// The SIMD body of k nearest neighbours in any point dimension D on the CPU, compiled once per
// CPU capability (knn_anyd_cpu.cpp includes it through common/cpu_multiversion.h).
//
// Brute force over a blocked cloud (common/blocked_cloud_simd.h): a group of queries of one
// cloud is scored against each block of W points at once, so every point vector loaded serves
// the whole group; only lanes that beat a query's current k-th best reach its sorted list. Points
// are visited in index order, so a strict `<` against the k-th best and insertion after equal
// distances give the (distance, index) order of the 3-D kernels. The op runs it for D > 3 (D = 1, 2
// take the 3-D kernels on zero-padded points).
#include "common/cpu_simd.h"
#include "common/blocked_cloud_simd.h"

namespace recon_fast {
namespace CPU_CAPABILITY {
namespace {

// Queries scored together against each loaded block of points: one accumulator vector each,
// independent chains that hide the add latency (8 fit in AVX-512's 32 registers).
constexpr int kQueryGroup = 2 * kRegisterBlocks;

// Bit l set when lane l of a comparison is: the admitted lanes are then visited with
// count-trailing-zeros instead of one unpredictable branch per lane.
template <typename M>
inline uint32_t lane_bits(const M& mask, int width) {
  uint32_t bits = 0;
  for (int l = 0; l < width; ++l) bits |= (mask[l] ? 1u : 0u) << l;
  return bits;
}

// The k best (distance, index) pairs seen so far, sorted; equal distances in arrival order.
template <typename T>
struct SortedNeighbors {
  T* dist;
  int64_t* idx;
  int64_t k;
  int64_t count = 0;

  T worst() const { return count < k ? std::numeric_limits<T>::infinity() : dist[k - 1]; }

  void insert(T d, int64_t i) {
    int64_t s = count < k ? count++ : k - 1;
    while (s > 0 && dist[s - 1] > d) {
      dist[s] = dist[s - 1];
      idx[s] = idx[s - 1];
      --s;
    }
    dist[s] = d;
    idx[s] = i;
  }
};

// Scans the whole cloud for `G` queries (q: G rows of D coordinates in T).
template <int Norm, int kDim, int G, typename T>
void scan_cloud(const BlockedCloud<T>& cloud, const T* q, SortedNeighbors<T>* lists) {
  using V = typename Simd<T>::vec;
  constexpr int W = Simd<T>::width;
  for (int64_t blk = 0; blk < cloud.blocks; ++blk) {
    V acc[G];
    block_dists<Norm, kDim, G, T>(cloud.block(blk), q, cloud.dim, acc);
    for (int g = 0; g < G; ++g) {
      // Padding lanes hold NaN coordinates: their distance is NaN and never passes.
      uint32_t pass = lane_bits(acc[g] < simd_splat<T>(lists[g].worst()), W);
      while (pass != 0) {
        const int l = __builtin_ctz(pass);
        pass &= pass - 1;
        if (acc[g][l] < lists[g].worst()) lists[g].insert(acc[g][l], blk * W + l);
      }
    }
  }
}

template <typename scalar_t, int Norm, int kDim>
void knn_anyd_impl(const at::Tensor& query, const at::Tensor& points,
                   const std::vector<int64_t>& qlens, const std::vector<int64_t>& plens, int64_t k,
                   at::Tensor& dist, at::Tensor& idx) {
  using T = acc_type<scalar_t>;
  constexpr int G = kQueryGroup;
  const int64_t B = query.size(0), M = query.size(1), N = points.size(1), D = query.size(2);
  const scalar_t* q_data = query.data_ptr<scalar_t>();
  const scalar_t* p_data = points.data_ptr<scalar_t>();
  scalar_t* dist_out = dist.data_ptr<scalar_t>();
  int64_t* idx_out = idx.data_ptr<int64_t>();

  std::vector<BlockedCloud<T>> clouds(B);
  parallel_chunks(B, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      clouds[b].load(p_data + b * N * D, plens[b], D, std::numeric_limits<T>::quiet_NaN());
    }
  });

  // One task: G consecutive queries of one cloud.
  const int64_t groups = (M + G - 1) / G;
  const int64_t work = std::max<int64_t>(N * D * G, 1);
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 16) / work);
  parallel_chunks(B * groups, grain, [&](int64_t begin, int64_t end) {
    std::vector<T> q(G * D), list_dist(G * k);
    std::vector<int64_t> list_idx(G * k);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / groups, first = (task % groups) * G;
      const int64_t valid = std::max<int64_t>(0, std::min<int64_t>(G, qlens[b] - first));
      SortedNeighbors<T> lists[G];
      for (int g = 0; g < G; ++g) {
        lists[g] = SortedNeighbors<T>{list_dist.data() + g * k, list_idx.data() + g * k, k};
        // Rows past the valid queries repeat the first one (their result is never written).
        const int64_t row = b * M + first + (g < valid ? g : 0);
        for (int64_t d = 0; d < D; ++d) q[g * D + d] = static_cast<T>(q_data[row * D + d]);
      }
      if (valid > 0 && clouds[b].blocks > 0) {
        scan_cloud<Norm, kDim, G, T>(clouds[b], q.data(), lists);
      }
      for (int64_t g = 0; g < G && first + g < M; ++g) {
        const int64_t row = (b * M + first + g) * k;
        const int64_t found = g < valid ? lists[g].count : 0;
        for (int64_t j = 0; j < k; ++j) {
          dist_out[row + j] = static_cast<scalar_t>(j < found ? lists[g].dist[j] : T(0));
          idx_out[row + j] = j < found ? lists[g].idx[j] : -1;
        }
      }
    }
  });
}

}  // namespace

void knn_anyd_cpu_kernel(const at::Tensor& query, const at::Tensor& points,
                         const std::vector<int64_t>& qlens, const std::vector<int64_t>& plens,
                         int64_t k, int64_t norm, at::Tensor& dist, at::Tensor& idx) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, query.scalar_type(), "knn_anyd_cpu",
                                  [&] {
    if (norm == 2) {
      knn_anyd_impl<scalar_t, 2, 0>(query, points, qlens, plens, k, dist, idx);
    } else {
      knn_anyd_impl<scalar_t, 1, 0>(query, points, qlens, plens, k, dist, idx);
    }
  });
}

}  // namespace CPU_CAPABILITY
}  // namespace recon_fast
