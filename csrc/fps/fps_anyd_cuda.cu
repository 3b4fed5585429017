// Farthest point sampling in any point dimension D on the GPU (the 3-D kernels: fps_cuda.cu).
//
// One block per cloud; each thread owns the points tid, tid + threads, ... and keeps their
// running minimum distances in a global scratch array (B, N). Each step reads the last sample's
// coordinates (one address for the whole block: broadcast through the cache), lowers the minima,
// and finds the farthest point with a warp-shuffle argmax, ties to the lowest index, then a
// second warp pass over the per-warp winners (one __syncthreads per step, double-buffered slots).
//
// Matches the CPU kernels: squared distances and norms summed over d = 0, 1, ... in the
// accumulation type, points with squared norm <= min_norm_sq never chosen (minimum -inf), and
// when no point can be chosen every further sample is index 0.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <limits>

#include "common/cuda_utils.cuh"
#include "fps/fps_anyd.h"
#include "fps/fps_argmax_cuda.cuh"

namespace recon_fast {
namespace {

using cuda::acc_t;
using cuda::kFullMask;
using cuda::kWarpSize;
using fps_argmax::block_argmax;
using fps_argmax::keep_farther;
using fps_argmax::kNoIndex;

constexpr int kMaxThreads = 1024;

template <typename scalar_t>
struct FpsAnyDParams {
  const scalar_t* xyz;       // (B, N, D)
  const int64_t* lengths;    // (B,)
  const int64_t* start_idx;  // (B,)
  int64_t B, N, D, m;
  double threshold;          // min_norm_sq; compared in double, as pointnet2_ops does
  bool skip_near_origin;     // min_norm_sq >= 0
  acc_t<scalar_t>* scratch;  // (B, N) running minima
  int64_t* out;              // (B, m)
};

// Squared distance of point a (scalar_t) to point c, or the squared norm of a when c is null.
template <typename T, typename scalar_t>
__device__ __forceinline__ T squared_dist(const scalar_t* __restrict__ a,
                                          const scalar_t* __restrict__ c, int64_t D) {
  T sum = T(0);
  for (int64_t d = 0; d < D; ++d) {
    const T diff = c ? cuda::sub_rn(static_cast<T>(c[d]), static_cast<T>(a[d]))
                     : static_cast<T>(a[d]);
    sum = cuda::add_rn(sum, cuda::mul_rn(diff, diff));
  }
  return sum;
}

template <typename scalar_t>
__global__ void __launch_bounds__(kMaxThreads) fps_anyd_kernel(const FpsAnyDParams<scalar_t> p) {
  using T = acc_t<scalar_t>;
  __shared__ T slot_d[2][kWarpSize];
  __shared__ int32_t slot_i[2][kWarpSize];

  const int64_t b = blockIdx.x;
  const int tid = threadIdx.x, threads = blockDim.x;
  const int64_t D = p.D;
  const int64_t len = cuda::clamp_length(p.lengths, b, p.N);
  const int64_t count = len < p.m ? len : p.m;
  const scalar_t* cloud = p.xyz + b * p.N * D;
  T* mind = p.scratch + b * p.N;
  int64_t* out = p.out + b * p.m;

  for (int64_t j = count + tid; j < p.m; j += threads) out[j] = -1;
  if (count == 0) return;
  int64_t start = p.start_idx[b];
  start = start < 0 ? 0 : (start >= len ? len - 1 : start);
  if (tid == 0) out[0] = start;

  for (int64_t i = tid; i < len; i += threads) {
    const T norm = squared_dist<T>(cloud + i * D, static_cast<const scalar_t*>(nullptr), D);
    const bool eligible = !p.skip_near_origin || !(static_cast<double>(norm) <= p.threshold);
    mind[i] = eligible ? cuda::positive_infinity<T>() : -cuda::positive_infinity<T>();
  }

  int64_t last = start;
  for (int64_t j = 1; j < count; ++j) {
    const int parity = static_cast<int>(j & 1);
    const scalar_t* chosen = cloud + last * D;
    T best_d = -cuda::positive_infinity<T>();
    int32_t best_i = kNoIndex;
    for (int64_t i = tid; i < len; i += threads) {
      // The difference is taken as (chosen - point) like the 3-D kernels' dist_between.
      const T d = squared_dist<T>(cloud + i * D, chosen, D);
      const T md = d < mind[i] ? d : mind[i];
      mind[i] = md;
      keep_farther(best_d, best_i, md, static_cast<int32_t>(i));
    }
    block_argmax(best_d, best_i, slot_d, slot_i, parity);
    last = best_i;
    if (tid == 0) out[j] = last;
  }
}

}  // namespace

void fps_anyd_cuda(const at::Tensor& xyz, const at::Tensor& lengths, int64_t m,
                   const at::Tensor& start_idx, double min_norm_sq, at::Tensor& idx) {
  const int64_t B = xyz.size(0), N = xyz.size(1), D = xyz.size(2);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  // About four points per thread, whole warps, at most kMaxThreads.
  const int threads = static_cast<int>(std::min<int64_t>(
      kMaxThreads, cuda::round_up(std::max<int64_t>(cuda::ceil_div(N, 4), 1), kWarpSize)));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, xyz.scalar_type(), "fps_anyd_cuda",
                                  [&] {
    using T = acc_t<scalar_t>;
    at::Tensor scratch = at::empty({B, N}, xyz.options().dtype(at::toOpMathType(xyz.scalar_type())));
    FpsAnyDParams<scalar_t> params;
    params.xyz = xyz.data_ptr<scalar_t>();
    params.lengths = lengths.data_ptr<int64_t>();
    params.start_idx = start_idx.data_ptr<int64_t>();
    params.B = B;
    params.N = N;
    params.D = D;
    params.m = m;
    params.threshold = min_norm_sq;
    params.skip_near_origin = min_norm_sq >= 0;
    params.scratch = scratch.data_ptr<T>();
    params.out = idx.data_ptr<int64_t>();
    fps_anyd_kernel<scalar_t><<<cuda::checked_grid(B, "fps"), threads, 0, stream>>>(params);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace recon_fast
