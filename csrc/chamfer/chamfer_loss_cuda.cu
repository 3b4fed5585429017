// The fused Chamfer loss for many small pairs (ReCon's reconstruction loss: 4864 pairs of 32 x 32
// points at batch 128) in three launches for forward + backward.
//
// Forward, one block per pair: both clouds go to shared memory, one thread per point of either
// cloud finds its nearest neighbour in the other (strict `<`: ties to the lowest index, as the
// chamfer op), turns the squared distance into the loss term (d for norm 2, sqrt(max(d, tiny))
// for norm 1) and the block sums each direction's terms into the pair's loss; a second launch
// (at::sum) reduces the pairs for reduction "sum"/"mean". Backward, one block per pair: the
// gradient of each term is scattered into both clouds' rows with shared-memory atomics and
// written once, so no zero-filled global buffers and no global atomics.
//
// Only full clouds of at most kMaxPoints points each (the Python layer routes everything else to
// the chamfer op); float32 and float64 (halves are upcast by the caller, like chamfer_distance).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mean.h>
#include <ATen/ops/sum.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>
#include <tuple>

#include "common/cuda_utils.cuh"

namespace recon_fast {
namespace {

using cuda::kWarpSize;
using cuda::Point4;

constexpr int kMaxPoints = 256;                 // per cloud: both clouds fit one block's threads
constexpr int kMaxThreads = 2 * kMaxPoints;
constexpr int kMaxWarps = kMaxThreads / kWarpSize;

enum Reduction : int64_t { kNone = 0, kSum = 1, kMean = 2 };

// The loss term of one nearest-neighbour squared distance, and its derivative in d.
template <typename T>
__device__ __forceinline__ T loss_term(T d, int norm) {
  return norm == 2 ? d : sqrt(d > std::numeric_limits<T>::min() ? d : std::numeric_limits<T>::min());
}

template <typename T>
__device__ __forceinline__ T loss_term_grad(T d, int norm) {
  if (norm == 2) return T(1);
  const T tiny = std::numeric_limits<T>::min();
  return d >= tiny ? T(0.5) / sqrt(d) : T(0);  // clamp_min(tiny) passes no gradient below tiny
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) {
    v += __shfl_down_sync(cuda::kFullMask, v, offset);
  }
  return v;
}

// Both clouds of pair b into shared memory: x first (N points), then y (M points).
template <typename T, typename scalar_t>
__device__ __forceinline__ void load_pair(Point4<T>* cloud, const scalar_t* x, const scalar_t* y,
                                          int64_t b, int N, int M) {
  for (int s = threadIdx.x; s < N + M; s += blockDim.x) {
    cloud[s] = s < N ? cuda::load_point<T>(x + b * N * 3, s) : cuda::load_point<T>(y + b * M * 3, s - N);
  }
}

// Nearest point of `other` (count points) to q: squared distance and index (-1 if none compares).
template <typename T>
__device__ __forceinline__ int nearest(const Point4<T>& q, const Point4<T>* other, int count, T& best) {
  best = cuda::positive_infinity<T>();
  int best_i = -1;
  for (int s = 0; s < count; ++s) {
    const T d = cuda::dist_between<2>(q, other[s]);
    if (d < best) {
      best = d;
      best_i = s;
    }
  }
  if (best_i < 0) {  // every distance overflowed: the first comparable one, as the chamfer op
    for (int s = 0; s < count && best_i < 0; ++s) {
      const T d = cuda::dist_between<2>(q, other[s]);
      if (d == d) {
        best = d;
        best_i = s;
      }
    }
  }
  return best_i;
}

template <typename scalar_t>
__global__ void __launch_bounds__(kMaxThreads)
    chamfer_loss_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ y, int N,
                        int M, int norm, scalar_t* __restrict__ per_pair,
                        int64_t* __restrict__ idx_xy, int64_t* __restrict__ idx_yx) {
  using T = cuda::acc_t<scalar_t>;
  __shared__ Point4<T> cloud[kMaxThreads];
  __shared__ T partial[2][kMaxWarps];
  const int64_t b = blockIdx.x;
  load_pair(cloud, x, y, b, N, M);
  __syncthreads();

  const int t = threadIdx.x;
  const bool is_x = t < N;
  T term = T(0);
  if (t < N + M) {
    T d;
    const int j = is_x ? nearest(cloud[t], cloud + N, M, d) : nearest(cloud[t], cloud, N, d);
    if (is_x) {
      idx_xy[b * N + t] = j;
    } else {
      idx_yx[b * M + (t - N)] = j;
    }
    term = j >= 0 ? loss_term(d, norm) : T(0);
  }
  // Per-direction sums: every warp adds its x terms and its y terms (a warp may hold both).
  const T x_sum = warp_sum(is_x ? term : T(0));
  const T y_sum = warp_sum(is_x ? T(0) : term);
  const int warp = t / kWarpSize, lane = t % kWarpSize;
  if (lane == 0) {
    partial[0][warp] = x_sum;
    partial[1][warp] = y_sum;
  }
  __syncthreads();
  if (t == 0) {
    T sx = T(0), sy = T(0);
    for (int w = 0; w < static_cast<int>(blockDim.x) / kWarpSize; ++w) {
      sx += partial[0][w];
      sy += partial[1][w];
    }
    const T loss = sx / T(N) + sy / T(M);
    per_pair[b] = static_cast<scalar_t>(norm == 2 ? loss : loss / T(2));
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kMaxThreads)
    chamfer_loss_backward_kernel(const scalar_t* __restrict__ grad_loss, int64_t reduction,
                                 int64_t B, const scalar_t* __restrict__ x,
                                 const scalar_t* __restrict__ y, const int64_t* __restrict__ idx_xy,
                                 const int64_t* __restrict__ idx_yx, int N, int M, int norm,
                                 scalar_t* __restrict__ grad_x, scalar_t* __restrict__ grad_y) {
  using T = cuda::acc_t<scalar_t>;
  __shared__ Point4<T> cloud[kMaxThreads];
  __shared__ T grad[kMaxThreads][3];
  const int64_t b = blockIdx.x;
  load_pair(cloud, x, y, b, N, M);
  for (int s = threadIdx.x; s < N + M; s += blockDim.x) {
    grad[s][0] = grad[s][1] = grad[s][2] = T(0);
  }
  __syncthreads();

  const int t = threadIdx.x;
  if (t < N + M) {
    const bool is_x = t < N;
    const int64_t j = is_x ? idx_xy[b * N + t] : idx_yx[b * M + (t - N)];
    if (j >= 0 && j < (is_x ? M : N)) {
      const int other = static_cast<int>(is_x ? N + j : j);  // the neighbour's slot in `cloud`
      T g = static_cast<T>(grad_loss[reduction == kNone ? b : 0]);
      if (reduction == kMean) g /= T(B);
      g /= T(is_x ? N : M);
      if (norm != 2) g /= T(2);
      const T d = cuda::dist_between<2>(cloud[t], cloud[other]);
      const Point4<T> v = cuda::neighbor_grad(cloud[t], cloud[other], g * loss_term_grad(d, norm), 2);
      atomicAdd(&grad[t][0], v.x);
      atomicAdd(&grad[t][1], v.y);
      atomicAdd(&grad[t][2], v.z);
      atomicAdd(&grad[other][0], -v.x);
      atomicAdd(&grad[other][1], -v.y);
      atomicAdd(&grad[other][2], -v.z);
    }
  }
  __syncthreads();
  for (int s = threadIdx.x; s < N + M; s += blockDim.x) {
    scalar_t* out = s < N ? grad_x + (b * N + s) * 3 : grad_y + (b * M + (s - N)) * 3;
#pragma unroll
    for (int a = 0; a < 3; ++a) out[a] = static_cast<scalar_t>(grad[s][a]);
  }
}

int threads_for(int64_t N, int64_t M) {
  return static_cast<int>(cuda::round_up(N + M, kWarpSize));
}

void check_loss_args(const at::Tensor& x, const at::Tensor& y, int64_t norm, int64_t reduction) {
  TORCH_CHECK_VALUE(x.dim() == 3 && x.size(2) == 3 && y.dim() == 3 && y.size(2) == 3 &&
                        x.size(0) == y.size(0),
                    "chamfer_loss: x must be (B, N, 3) and y (B, M, 3), got ", x.sizes(), " and ",
                    y.sizes());
  TORCH_CHECK_VALUE(x.scalar_type() == y.scalar_type() &&
                        (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble),
                    "chamfer_loss: x and y must both be float32 or float64, got ", x.scalar_type(),
                    " and ", y.scalar_type());
  TORCH_CHECK_VALUE(x.device() == y.device(), "chamfer_loss: x is on ", x.device(), " but y on ",
                    y.device());
  TORCH_CHECK_VALUE(x.size(1) >= 1 && y.size(1) >= 1 && x.size(1) <= kMaxPoints &&
                        y.size(1) <= kMaxPoints,
                    "chamfer_loss: clouds of 1 to ", kMaxPoints, " points, got N = ", x.size(1),
                    " and M = ", y.size(1), " (use chamfer for larger clouds)");
  TORCH_CHECK_VALUE(norm == 1 || norm == 2, "chamfer_loss: norm must be 1 or 2, got ", norm);
  TORCH_CHECK_VALUE(reduction >= kNone && reduction <= kMean,
                    "chamfer_loss: reduction must be 0 (none), 1 (sum) or 2 (mean), got ", reduction);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> chamfer_loss_cuda(const at::Tensor& x_in,
                                                                 const at::Tensor& y_in,
                                                                 int64_t norm, int64_t reduction) {
  check_loss_args(x_in, y_in, norm, reduction);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), y = y_in.contiguous();
  const int64_t B = x.size(0), N = x.size(1), M = y.size(1);
  at::Tensor per_pair = at::empty({B}, x.options());
  at::Tensor ixy = at::empty({B, N}, x.options().dtype(at::kLong));
  at::Tensor iyx = at::empty({B, M}, x.options().dtype(at::kLong));
  if (B > 0) {
    const unsigned grid = cuda::checked_grid(B, "chamfer_loss");
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "chamfer_loss_cuda", [&] {
      chamfer_loss_kernel<scalar_t><<<grid, threads_for(N, M), 0, stream>>>(
          x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), static_cast<int>(N), static_cast<int>(M),
          static_cast<int>(norm), per_pair.data_ptr<scalar_t>(), ixy.data_ptr<int64_t>(),
          iyx.data_ptr<int64_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  if (reduction == kSum) return {at::sum(per_pair), ixy, iyx};
  if (reduction == kMean) return {at::mean(per_pair), ixy, iyx};
  return {per_pair, ixy, iyx};
}

std::tuple<at::Tensor, at::Tensor> chamfer_loss_backward_cuda(
    const at::Tensor& grad_in, const at::Tensor& x_in, const at::Tensor& y_in,
    const at::Tensor& ixy_in, const at::Tensor& iyx_in, int64_t norm, int64_t reduction) {
  check_loss_args(x_in, y_in, norm, reduction);
  const int64_t B = x_in.size(0), N = x_in.size(1), M = y_in.size(1);
  TORCH_CHECK_VALUE(grad_in.numel() == (reduction == kNone ? B : 1),
                    "chamfer_loss_backward: grad_loss has ", grad_in.numel(), " elements for ", B,
                    " pairs and reduction ", reduction);
  TORCH_CHECK_VALUE(ixy_in.sizes() == at::IntArrayRef({B, N}) && iyx_in.sizes() == at::IntArrayRef({B, M}) &&
                        ixy_in.scalar_type() == at::kLong && iyx_in.scalar_type() == at::kLong,
                    "chamfer_loss_backward: idx_xy must be int64 (B, N) and idx_yx (B, M), got ",
                    ixy_in.sizes(), " and ", iyx_in.sizes());
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), y = y_in.contiguous(), ixy = ixy_in.contiguous(),
                   iyx = iyx_in.contiguous(), grad = grad_in.to(x.scalar_type()).contiguous();
  at::Tensor grad_x = at::empty({B, N, 3}, x.options());
  at::Tensor grad_y = at::empty({B, M, 3}, x.options());
  if (B > 0) {
    const unsigned grid = cuda::checked_grid(B, "chamfer_loss_backward");
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "chamfer_loss_backward_cuda", [&] {
      chamfer_loss_backward_kernel<scalar_t><<<grid, threads_for(N, M), 0, stream>>>(
          grad.data_ptr<scalar_t>(), reduction, B, x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(),
          ixy.data_ptr<int64_t>(), iyx.data_ptr<int64_t>(), static_cast<int>(N),
          static_cast<int>(M), static_cast<int>(norm), grad_x.data_ptr<scalar_t>(),
          grad_y.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return {grad_x, grad_y};
}

}  // namespace

TORCH_LIBRARY_IMPL(recon_fast, CUDA, m) {
  m.impl("chamfer_loss", &chamfer_loss_cuda);
  m.impl("chamfer_loss_backward", &chamfer_loss_backward_cuda);
}

}  // namespace recon_fast
