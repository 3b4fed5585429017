// Device helpers shared by the CUDA kernels: accumulation types, the distance formulas (the same
// operations in the same order as the CPU kernels and the PyTorch reference), point loads, length
// clamping and launch arithmetic.
#pragma once

#include <ATen/OpMathType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <limits>

namespace recon_fast {
namespace cuda {

// float for float16/bfloat16/float32, double for float64 (as acc_type in cpu_utils.h).
template <typename scalar_t>
using acc_t = at::opmath_type<scalar_t>;

constexpr int kWarpSize = 32;
constexpr unsigned kFullMask = 0xffffffffu;

// Explicitly rounded operations: the compiler can never contract them into a fused multiply-add,
// so distances are bitwise those of the CPU kernels (built with -ffp-contract=off) and of the
// reference even if a build forgets -fmad=false.
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ float sub_rn(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ double sub_rn(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float abs_of(float a) { return fabsf(a); }
__device__ __forceinline__ double abs_of(double a) { return fabs(a); }

template <typename T>
__host__ __device__ __forceinline__ T positive_infinity() {
  return static_cast<T>(INFINITY);
}

// A point in the accumulation type, padded to 16 (float) or 32 (double) bytes so that a shared
// memory tile entry is read with one (float) or two (double) 128-bit loads.
template <typename T>
struct alignas(4 * sizeof(T)) Point4 {
  T x, y, z, w;
};

// Point i of a contiguous (n, 3) array, converted to the accumulation type.
template <typename T, typename scalar_t>
__device__ __forceinline__ Point4<T> load_point(const scalar_t* __restrict__ xyz, int64_t i) {
  Point4<T> p;
  p.x = static_cast<T>(xyz[3 * i + 0]);
  p.y = static_cast<T>(xyz[3 * i + 1]);
  p.z = static_cast<T>(xyz[3 * i + 2]);
  p.w = T(0);
  return p;
}

// ((dx*dx + dy*dy) + dz*dz) for Norm == 2, (|dx| + |dy|) + |dz| for Norm == 1.
template <int Norm, typename T>
__device__ __forceinline__ T point_dist(T dx, T dy, T dz) {
  if constexpr (Norm == 2) {
    return add_rn(add_rn(mul_rn(dx, dx), mul_rn(dy, dy)), mul_rn(dz, dz));
  } else {
    return add_rn(add_rn(abs_of(dx), abs_of(dy)), abs_of(dz));
  }
}

// Distance with d = a - b, the difference every op takes (query minus point).
template <int Norm, typename T>
__device__ __forceinline__ T dist_between(const Point4<T>& a, const Point4<T>& b) {
  return point_dist<Norm>(sub_rn(a.x, b.x), sub_rn(a.y, b.y), sub_rn(a.z, b.z));
}

// lengths[b] clamped to [0, max_len]: the Python layer validates lengths, the kernels only make
// sure that a bad value can never index outside the tensors.
__device__ __forceinline__ int64_t clamp_length(const int64_t* __restrict__ lengths, int64_t b,
                                                int64_t max_len) {
  const int64_t v = lengths[b];
  return v < 0 ? 0 : (v > max_len ? max_len : v);
}

template <typename T>
__device__ __forceinline__ T sign_of(T v) {
  return static_cast<T>((v > T(0)) - (v < T(0)));
}

// d/dq of the distance between q and p, times g: 2 (q - p) g for squared L2, sign(q - p) g for
// L1, in the CPU kernels' order ((2 * d) * g).
template <typename T>
__device__ __forceinline__ Point4<T> neighbor_grad(const Point4<T>& q, const Point4<T>& p, T g,
                                                   int norm) {
  const T d[3] = {sub_rn(q.x, p.x), sub_rn(q.y, p.y), sub_rn(q.z, p.z)};
  T v[3];
#pragma unroll
  for (int a = 0; a < 3; ++a) {
    v[a] = norm == 2 ? mul_rn(mul_rn(T(2), d[a]), g) : mul_rn(sign_of(d[a]), g);
  }
  return Point4<T>{v[0], v[1], v[2], T(0)};
}

__host__ __device__ __forceinline__ int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

__host__ __device__ __forceinline__ int64_t round_up(int64_t a, int64_t multiple) {
  return ceil_div(a, multiple) * multiple;
}

// Blocks for a grid-stride loop over `work` items: enough to fill the GPU, never more than the
// grid allows.
inline unsigned grid_stride_blocks(int64_t work, int threads) {
  constexpr int64_t kMaxBlocks = int64_t(1) << 20;
  const int64_t blocks = ceil_div(work, threads);
  return static_cast<unsigned>(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

// A one-dimensional grid of `blocks` blocks (gridDim.x allows 2^31 - 1).
inline unsigned checked_grid(int64_t blocks, const char* op) {
  TORCH_CHECK(blocks > 0 && blocks <= std::numeric_limits<int32_t>::max(), op,
              ": the problem needs ", blocks, " thread blocks, more than one launch allows");
  return static_cast<unsigned>(blocks);
}

}  // namespace cuda
}  // namespace recon_fast
