// Farthest point sampling on the GPU: the argmax of the running minimum distances, shared by
// the 3-D kernels (fps_cuda.cu) and the any-D kernel (fps_anyd_cuda.cu). Ties go to the lowest
// index, as on the CPU.
#pragma once

#include <cstdint>
#include <limits>

#include "common/cuda_utils.cuh"

namespace recon_fast {
namespace fps_argmax {

using cuda::kFullMask;
using cuda::kWarpSize;

// No candidate yet: loses every tie (the largest index).
constexpr int32_t kNoIndex = std::numeric_limits<int32_t>::max();

// (d, i) beats (best_d, best_i): larger distance, or equal distance and lower index.
template <typename T>
__device__ __forceinline__ void keep_farther(T& best_d, int32_t& best_i, T d, int32_t i) {
  if (d > best_d || (d == best_d && i < best_i)) {
    best_d = d;
    best_i = i;
  }
}

// Butterfly argmax: every lane ends with the warp's winner.
template <typename T>
__device__ __forceinline__ void warp_argmax(T& d, int32_t& i) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    const T other_d = __shfl_xor_sync(kFullMask, d, offset);
    const int32_t other_i = __shfl_xor_sync(kFullMask, i, offset);
    keep_farther(d, i, other_d, other_i);
  }
}

// Argmax over the block; every thread ends with the winner. The shared slots are double-buffered
// by step parity, so a fast warp writing the next step's slot never overwrites a value that a
// slow warp is still reading: one __syncthreads per step suffices.
template <typename T>
__device__ __forceinline__ void block_argmax(T& d, int32_t& i, T (*slot_d)[kWarpSize],
                                             int32_t (*slot_i)[kWarpSize], int parity) {
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const int num_warps = blockDim.x / kWarpSize;
  warp_argmax(d, i);
  if (lane == 0) {
    slot_d[parity][warp] = d;
    slot_i[parity][warp] = i;
  }
  __syncthreads();
  d = lane < num_warps ? slot_d[parity][lane] : -cuda::positive_infinity<T>();
  i = lane < num_warps ? slot_i[parity][lane] : kNoIndex;
  warp_argmax(d, i);
}

}  // namespace fps_argmax
}  // namespace recon_fast
