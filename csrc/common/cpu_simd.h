// Vector helpers of one CPU capability: RECON_FAST_SIMD_BYTES-wide GCC vector types (16 bytes:
// SSE2/NEON, 32: AVX2, 64: AVX-512), loads, stores, distances, and clouds stored as padded
// structure-of-arrays. Included by kernel bodies once per capability through
// cpu_multiversion.h, inside which CPU_CAPABILITY names the namespace; no include guard.
#ifndef CPU_CAPABILITY
#error "cpu_simd.h is included by kernel bodies through common/cpu_multiversion.h"
#endif

namespace recon_fast {
namespace CPU_CAPABILITY {

template <typename T>
struct Simd;
template <>
struct Simd<float> {
  typedef float vec __attribute__((vector_size(RECON_FAST_SIMD_BYTES)));
  typedef int32_t ivec __attribute__((vector_size(RECON_FAST_SIMD_BYTES)));
  static constexpr int width = RECON_FAST_SIMD_BYTES / 4;
};
template <>
struct Simd<double> {
  typedef double vec __attribute__((vector_size(RECON_FAST_SIMD_BYTES)));
  typedef int64_t ivec __attribute__((vector_size(RECON_FAST_SIMD_BYTES)));
  static constexpr int width = RECON_FAST_SIMD_BYTES / 8;
};

// Vector-plus-scalar broadcasts in one instruction; a lane-by-lane fill would become a chain of
// inserts in the hot loops that splat a point per iteration.
template <typename T>
inline typename Simd<T>::vec simd_splat(T v) {
  return typename Simd<T>::vec{} + v;
}

template <typename T>
inline typename Simd<T>::vec simd_load(const T* p) {
  typename Simd<T>::vec r;
  __builtin_memcpy(&r, p, sizeof(r));
  return r;
}

template <typename T>
inline void simd_store(T* p, typename Simd<T>::vec v) {
  __builtin_memcpy(p, &v, sizeof(v));
}

// Lane indices 0, 1, ..., width - 1.
template <typename T>
inline typename Simd<T>::ivec simd_lanes() {
  typename Simd<T>::ivec r;
  for (int i = 0; i < Simd<T>::width; ++i) r[i] = i;
  return r;
}

// The largest value over every lane of two running maxima (best[a], at indices best_idx[a]),
// ties to the lowest index: FPS's argmax, as a scan of the points in index order would give.
template <typename T>
inline int64_t simd_argmax_lowest_index(const typename Simd<T>::vec (&best)[2],
                                        const typename Simd<T>::ivec (&best_idx)[2]) {
  T best_val = -std::numeric_limits<T>::infinity();
  int64_t best_i = 0;
  for (int a = 0; a < 2; ++a) {
    for (int l = 0; l < Simd<T>::width; ++l) {
      const T v = best[a][l];
      const int64_t i = static_cast<int64_t>(best_idx[a][l]);
      if (v > best_val || (v == best_val && i < best_i)) {
        best_val = v;
        best_i = i;
      }
    }
  }
  return best_i;
}

template <typename T>
inline typename Simd<T>::vec simd_abs(typename Simd<T>::vec v) {
  return v < 0 ? -v : v;
}

// The scalar formulas of cpu_utils.h, a vector of points at a time (same operation order).
template <int Norm, typename T>
inline typename Simd<T>::vec simd_point_dist(typename Simd<T>::vec dx, typename Simd<T>::vec dy,
                                             typename Simd<T>::vec dz) {
  if constexpr (Norm == 2) {
    return (dx * dx + dy * dy) + dz * dz;
  } else {
    return (simd_abs<T>(dx) + simd_abs<T>(dy)) + simd_abs<T>(dz);
  }
}

// True when any lane of a comparison result is set.
template <typename M>
inline bool simd_any(const M& mask) {
  uint64_t words[sizeof(M) / sizeof(uint64_t)];
  __builtin_memcpy(words, &mask, sizeof(M));
  uint64_t any = 0;
  for (uint64_t w : words) any |= w;
  return any != 0;
}

// A cloud as three coordinate arrays in the accumulation type, padded to a multiple of the SIMD
// width with `pad` so that whole vectors can always be loaded.
template <typename T>
struct SoaCloud {
  std::vector<T> x, y, z;
  int64_t size = 0;

  template <typename scalar_t>
  void load(const scalar_t* xyz, int64_t n, T pad) {
    size = n;
    const int64_t padded = (n + Simd<T>::width - 1) / Simd<T>::width * Simd<T>::width;
    x.assign(padded, pad);
    y.assign(padded, pad);
    z.assign(padded, pad);
    for (int64_t i = 0; i < n; ++i) {
      x[i] = static_cast<T>(xyz[3 * i + 0]);
      y[i] = static_cast<T>(xyz[3 * i + 1]);
      z[i] = static_cast<T>(xyz[3 * i + 2]);
    }
  }
  int64_t padded_size() const { return static_cast<int64_t>(x.size()); }
};

// Independent accumulator chains a kernel can keep in registers: 16 vector registers below
// AVX-512, 32 with it.
constexpr int kRegisterBlocks = RECON_FAST_SIMD_BYTES == 64 ? 4 : 2;

}  // namespace CPU_CAPABILITY
}  // namespace recon_fast
