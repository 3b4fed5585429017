// A point cloud of any dimension D laid out for SIMD scans (array of structures of arrays):
// points are grouped in blocks of one vector width W, and block b stores coordinate d of its W
// points contiguously at data[(b * D + d) * W]. A scan over a block then reads D consecutive
// vectors, whatever D is, and keeps every point's arithmetic in the scalar order
// ((c0 + c1) + c2) + ... of the reference: vectors change how many points are processed at once,
// never the order of the operations on one point.
//
// Included by kernel bodies once per capability (through common/cpu_multiversion.h, after
// common/cpu_simd.h), inside which CPU_CAPABILITY names the namespace; no include guard.
#ifndef CPU_CAPABILITY
#error "blocked_cloud_simd.h is included by kernel bodies through common/cpu_multiversion.h"
#endif

namespace recon_fast {
namespace CPU_CAPABILITY {

template <typename T>
struct BlockedCloud {
  static constexpr int W = Simd<T>::width;
  std::vector<T> data;
  int64_t size = 0, blocks = 0, dim = 0;

  // n points of dimension D, row-major (n, D), converted to T; the lanes after the last point
  // hold `pad`.
  template <typename scalar_t>
  void load(const scalar_t* points, int64_t n, int64_t D, T pad) {
    size = n;
    dim = D;
    blocks = (n + W - 1) / W;
    data.assign(static_cast<size_t>(blocks * D * W), pad);
    for (int64_t i = 0; i < n; ++i) {
      T* slot = data.data() + (i / W) * D * W + i % W;
      for (int64_t d = 0; d < D; ++d) slot[d * W] = static_cast<T>(points[i * D + d]);
    }
  }

  const T* block(int64_t b) const { return data.data() + b * dim * W; }
};

// Distances from `G` query points q[g * D + d] to the W points of one block, per query one
// vector: sum over d of (q_d - p_d)^2 (Norm 2) or |q_d - p_d| (Norm 1), summed from d = 0 up
// starting at +0 (for D = 3 exactly the 3-D kernels' ((dx*dx + dy*dy) + dz*dz)). kDim > 0 fixes
// D at compile time (the loop unrolls); 0 reads `D`.
template <int Norm, int kDim, int G, typename T>
inline void block_dists(const T* block, const T* q, int64_t D, typename Simd<T>::vec (&acc)[G]) {
  using V = typename Simd<T>::vec;
  constexpr int W = Simd<T>::width;
  const int64_t dim = kDim > 0 ? kDim : D;
  for (int g = 0; g < G; ++g) acc[g] = V{};
  for (int64_t d = 0; d < dim; ++d) {
    const V p = simd_load<T>(block + d * W);
    for (int g = 0; g < G; ++g) {
      const V diff = simd_splat<T>(q[g * dim + d]) - p;
      if constexpr (Norm == 2) {
        acc[g] = acc[g] + diff * diff;
      } else {
        acc[g] = acc[g] + simd_abs<T>(diff);
      }
    }
  }
}

}  // namespace CPU_CAPABILITY
}  // namespace recon_fast
