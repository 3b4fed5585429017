// Gather / scatter-add of point rows on the GPU. One thread per output value, consecutive threads
// on consecutive channels of a row, so both the reads and the writes are coalesced. The backward
// adds into a float32 (float64) buffer with atomics, then casts to the input dtype.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "common/cuda_utils.cuh"
#include "gather_points/gather_points.h"

namespace recon_fast {
namespace {

using cuda::acc_t;

constexpr int kThreads = 256;

// out[b, s, c] = points[b, idx[b, s], c]; rows whose index is outside [0, N) (-1: padding) are 0.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    gather_points_kernel(const scalar_t* __restrict__ points, const int64_t* __restrict__ idx,
                         int64_t N, int64_t S, int64_t C, int64_t total,
                         scalar_t* __restrict__ out) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; t < total;
       t += stride) {
    const int64_t bs = t / C, c = t - bs * C;
    const int64_t j = idx[bs];
    const int64_t b = bs / S;
    out[t] = (j >= 0 && j < N) ? points[(b * N + j) * C + c] : scalar_t(0);
  }
}

// grad_points[b, idx[b, s], c] += grad_out[b, s, c], in the accumulation type.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    gather_points_backward_kernel(const scalar_t* __restrict__ grad_out,
                                  const int64_t* __restrict__ idx, int64_t N, int64_t S, int64_t C,
                                  int64_t total, acc_t<scalar_t>* __restrict__ grad_points) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; t < total;
       t += stride) {
    const int64_t bs = t / C, c = t - bs * C;
    const int64_t j = idx[bs];
    if (j < 0 || j >= N) continue;
    const int64_t b = bs / S;
    atomicAdd(&grad_points[(b * N + j) * C + c], static_cast<acc_t<scalar_t>>(grad_out[t]));
  }
}

at::Tensor gather_points_cuda(const at::Tensor& points_in, const at::Tensor& idx_in) {
  check_gather_points_args(points_in, idx_in);
  const c10::cuda::CUDAGuard guard(points_in.device());
  const at::Tensor points = points_in.contiguous(), idx = idx_in.contiguous();
  const int64_t B = points.size(0), N = points.size(1), C = points.size(2), S = idx.size(1);
  at::Tensor out = at::empty({B, S, C}, points.options());
  const int64_t total = out.numel();
  if (total == 0) return out;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, points.scalar_type(),
                                  "gather_points_cuda", [&] {
    gather_points_kernel<scalar_t><<<cuda::grid_stride_blocks(total, kThreads), kThreads, 0,
                                     stream>>>(points.data_ptr<scalar_t>(),
                                               idx.data_ptr<int64_t>(), N, S, C, total,
                                               out.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor gather_points_backward_cuda(const at::Tensor& grad_in, const at::Tensor& idx_in,
                                       int64_t num_points) {
  check_gather_points_backward_args(grad_in, idx_in, num_points);
  const c10::cuda::CUDAGuard guard(grad_in.device());
  const at::Tensor grad = grad_in.contiguous(), idx = idx_in.contiguous();
  const int64_t B = grad.size(0), S = grad.size(1), C = grad.size(2), N = num_points;
  at::Tensor acc =
      at::zeros({B, N, C}, grad.options().dtype(at::toOpMathType(grad.scalar_type())));
  const int64_t total = grad.numel();
  if (total > 0 && acc.numel() > 0) {
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(),
                                    "gather_points_backward_cuda", [&] {
      gather_points_backward_kernel<scalar_t>
          <<<cuda::grid_stride_blocks(total, kThreads), kThreads, 0, stream>>>(
              grad.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(), N, S, C, total,
              acc.data_ptr<acc_t<scalar_t>>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return acc.to(grad.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(recon_fast, CUDA, m) {
  m.impl("gather_points", &gather_points_cuda);
  m.impl("gather_points_backward", &gather_points_backward_cuda);
}

}  // namespace recon_fast
