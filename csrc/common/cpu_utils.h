// Helpers for the CPU kernels: accumulation types, structure-of-arrays copies of clouds (so the
// distance loops vectorise), portable SIMD vectors, and the distance formulas every kernel and
// the Python reference share.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace recon_fast {

// float for float16/bfloat16/float32, double for float64.
template <typename scalar_t>
using acc_type = at::opmath_type<scalar_t>;

// GCC/Clang vector extensions: 64-byte vectors that the compiler maps onto AVX-512, AVX2 or SSE
// (whatever -march allows), so one source serves every x86/ARM target.
template <typename T>
struct Simd;
template <>
struct Simd<float> {
  typedef float vec __attribute__((vector_size(64)));
  typedef int32_t ivec __attribute__((vector_size(64)));
  static constexpr int width = 16;
};
template <>
struct Simd<double> {
  typedef double vec __attribute__((vector_size(64)));
  typedef int64_t ivec __attribute__((vector_size(64)));
  static constexpr int width = 8;
};

template <typename T>
inline typename Simd<T>::vec simd_splat(T v) {
  typename Simd<T>::vec r;
  for (int i = 0; i < Simd<T>::width; ++i) r[i] = v;
  return r;
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

// Distances in the one order every implementation uses, ((dx*dx + dy*dy) + dz*dz), with no fused
// multiply-add (built with -ffp-contract=off), so CPU, CUDA and the PyTorch reference agree
// bit for bit and break ties identically.
template <typename V>
inline V sq_dist3(V dx, V dy, V dz) {
  return (dx * dx + dy * dy) + dz * dz;
}

template <typename T>
inline T abs_dist3(T dx, T dy, T dz) {
  return (std::abs(dx) + std::abs(dy)) + std::abs(dz);
}

template <typename T>
inline typename Simd<T>::vec simd_abs(typename Simd<T>::vec v) {
  return v < 0 ? -v : v;
}

template <int Norm, typename T>
inline T point_dist(T dx, T dy, T dz) {
  if constexpr (Norm == 2) {
    return sq_dist3(dx, dy, dz);
  } else {
    return abs_dist3(dx, dy, dz);
  }
}

template <int Norm, typename T>
inline typename Simd<T>::vec simd_point_dist(typename Simd<T>::vec dx, typename Simd<T>::vec dy,
                                             typename Simd<T>::vec dz) {
  if constexpr (Norm == 2) {
    return sq_dist3(dx, dy, dz);
  } else {
    return (simd_abs<T>(dx) + simd_abs<T>(dy)) + simd_abs<T>(dz);
  }
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

// Reads lengths (int64, (B,)) into a vector, checking 0 <= length <= max_len.
inline std::vector<int64_t> read_lengths(const at::Tensor& lengths, int64_t max_len,
                                         const char* name) {
  std::vector<int64_t> out(lengths.size(0));
  const at::Tensor contiguous = lengths.contiguous();
  const int64_t* p = contiguous.data_ptr<int64_t>();
  for (size_t b = 0; b < out.size(); ++b) {
    TORCH_CHECK_VALUE(p[b] >= 0 && p[b] <= max_len, name, "[", b, "] = ", p[b],
                      " is outside [0, ", max_len, "]");
    out[b] = p[b];
  }
  return out;
}

}  // namespace recon_fast
