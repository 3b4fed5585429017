// Ball query on the GPU: one thread per query point, scanning its cloud in index order and
// stopping at k hits, so the result is exactly the CPU kernel's (same summation order, explicitly
// rounded operations, no fused multiply-add). Consecutive threads take consecutive queries of a
// cloud and read the same point at the same time, which the cache serves as a broadcast.
// The backward adds into float32 (float64) buffers with atomics, then casts to the input dtype.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "ball_query/ball_query.h"
#include "common/cuda_utils.cuh"

namespace recon_fast {
namespace {

using cuda::acc_t;

constexpr int kThreads = 256;

// kDim > 0 fixes the dimension at compile time (unrolled, query in registers); 0 reads `dim`.
template <int kDim, typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    ball_query_kernel(const scalar_t* __restrict__ query, const scalar_t* __restrict__ points,
                      const int64_t* __restrict__ query_lengths,
                      const int64_t* __restrict__ point_lengths, int64_t M, int64_t N,
                      int64_t dim, int64_t k, acc_t<scalar_t> r2, int64_t total,
                      scalar_t* __restrict__ dist, int64_t* __restrict__ idx) {
  using T = acc_t<scalar_t>;
  const int64_t D = kDim > 0 ? kDim : dim;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t bm = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; bm < total;
       bm += stride) {
    const int64_t b = bm / M, i = bm - b * M;
    scalar_t* out_dist = dist + bm * k;
    int64_t* out_idx = idx + bm * k;
    int64_t count = 0;
    if (i < cuda::clamp_length(query_lengths, b, M)) {
      const int64_t n = cuda::clamp_length(point_lengths, b, N);
      const scalar_t* q = query + bm * D;
      const scalar_t* cloud = points + b * N * D;
      T qr[kDim > 0 ? kDim : 1];
      if constexpr (kDim > 0) {
#pragma unroll
        for (int d = 0; d < kDim; ++d) qr[d] = static_cast<T>(q[d]);
      }
      for (int64_t j = 0; j < n && count < k; ++j) {
        const scalar_t* p = cloud + j * D;
        T sum = T(0);
        if constexpr (kDim > 0) {
#pragma unroll
          for (int d = 0; d < kDim; ++d) {
            const T diff = cuda::sub_rn(qr[d], static_cast<T>(p[d]));
            sum = cuda::add_rn(sum, cuda::mul_rn(diff, diff));
          }
        } else {
          for (int64_t d = 0; d < D; ++d) {
            const T diff = cuda::sub_rn(static_cast<T>(q[d]), static_cast<T>(p[d]));
            sum = cuda::add_rn(sum, cuda::mul_rn(diff, diff));
          }
        }
        if (sum < r2) {
          out_dist[count] = static_cast<scalar_t>(sum);
          out_idx[count] = j;
          ++count;
        }
      }
    }
    for (int64_t s = count; s < k; ++s) {
      out_dist[s] = scalar_t(0);
      out_idx[s] = -1;
    }
  }
}

// One thread per (query, slot, coordinate): grad_query += 2 (q - p) g, grad_points -= the same.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    ball_query_backward_kernel(const scalar_t* __restrict__ grad_dist,
                               const scalar_t* __restrict__ query,
                               const scalar_t* __restrict__ points,
                               const int64_t* __restrict__ idx, int64_t M, int64_t N, int64_t D,
                               int64_t K, int64_t total, acc_t<scalar_t>* __restrict__ grad_query,
                               acc_t<scalar_t>* __restrict__ grad_points) {
  using T = acc_t<scalar_t>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; t < total;
       t += stride) {
    const int64_t slot = t / D, d = t - slot * D;  // slot = (b * M + i) * K + s
    const int64_t j = idx[slot];
    if (j < 0 || j >= N) continue;
    const int64_t bm = slot / K, b = bm / M;
    const T diff = cuda::sub_rn(static_cast<T>(query[bm * D + d]),
                                static_cast<T>(points[(b * N + j) * D + d]));
    const T v = cuda::mul_rn(cuda::mul_rn(T(2), diff), static_cast<T>(grad_dist[slot]));
    atomicAdd(&grad_query[bm * D + d], v);
    atomicAdd(&grad_points[(b * N + j) * D + d], -v);
  }
}

template <int kDim, typename scalar_t>
void launch_ball_query(const at::Tensor& query, const at::Tensor& points,
                       const at::Tensor& query_lengths, const at::Tensor& point_lengths,
                       int64_t k, double radius, at::Tensor& dist, at::Tensor& idx,
                       cudaStream_t stream) {
  using T = acc_t<scalar_t>;
  const int64_t B = query.size(0), M = query.size(1), N = points.size(1), D = query.size(2);
  const T r = static_cast<T>(radius);
  const int64_t total = B * M;
  ball_query_kernel<kDim, scalar_t><<<cuda::grid_stride_blocks(total, kThreads), kThreads, 0,
                                      stream>>>(
      query.data_ptr<scalar_t>(), points.data_ptr<scalar_t>(), query_lengths.data_ptr<int64_t>(),
      point_lengths.data_ptr<int64_t>(), M, N, D, k, r * r, total, dist.data_ptr<scalar_t>(),
      idx.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

std::tuple<at::Tensor, at::Tensor> ball_query_cuda(const at::Tensor& query_in,
                                                   const at::Tensor& points_in,
                                                   const at::Tensor& query_lengths_in,
                                                   const at::Tensor& point_lengths_in, int64_t k,
                                                   double radius) {
  check_ball_query_args(query_in, points_in, query_lengths_in, point_lengths_in, k, radius);
  const c10::cuda::CUDAGuard guard(query_in.device());
  const at::Tensor query = query_in.contiguous(), points = points_in.contiguous();
  const at::Tensor query_lengths = query_lengths_in.contiguous(),
                   point_lengths = point_lengths_in.contiguous();
  const int64_t B = query.size(0), M = query.size(1), D = query.size(2);
  at::Tensor dist = at::empty({B, M, k}, query.options());
  at::Tensor idx = at::empty({B, M, k}, query.options().dtype(at::kLong));
  if (B == 0 || M == 0) return {dist, idx};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, query.scalar_type(),
                                  "ball_query_cuda", [&] {
    if (D == 3) {
      launch_ball_query<3, scalar_t>(query, points, query_lengths, point_lengths, k, radius,
                                     dist, idx, stream);
    } else if (D == 2) {
      launch_ball_query<2, scalar_t>(query, points, query_lengths, point_lengths, k, radius,
                                     dist, idx, stream);
    } else {
      launch_ball_query<0, scalar_t>(query, points, query_lengths, point_lengths, k, radius,
                                     dist, idx, stream);
    }
  });
  return {dist, idx};
}

std::tuple<at::Tensor, at::Tensor> ball_query_backward_cuda(const at::Tensor& grad_dist_in,
                                                            const at::Tensor& query_in,
                                                            const at::Tensor& points_in,
                                                            const at::Tensor& idx_in) {
  check_ball_query_backward_args(grad_dist_in, query_in, points_in, idx_in);
  const c10::cuda::CUDAGuard guard(query_in.device());
  const at::Tensor grad_dist = grad_dist_in.contiguous(), query = query_in.contiguous(),
                   points = points_in.contiguous(), idx = idx_in.contiguous();
  const int64_t B = query.size(0), M = query.size(1), N = points.size(1), D = query.size(2),
                K = idx.size(2);
  const auto acc_options = query.options().dtype(at::toOpMathType(query.scalar_type()));
  at::Tensor grad_query = at::zeros({B, M, D}, acc_options);
  at::Tensor grad_points = at::zeros({B, N, D}, acc_options);
  const int64_t total = B * M * K * D;
  if (total > 0) {
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, query.scalar_type(),
                                    "ball_query_backward_cuda", [&] {
      ball_query_backward_kernel<scalar_t>
          <<<cuda::grid_stride_blocks(total, kThreads), kThreads, 0, stream>>>(
              grad_dist.data_ptr<scalar_t>(), query.data_ptr<scalar_t>(),
              points.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(), M, N, D, K, total,
              grad_query.data_ptr<acc_t<scalar_t>>(), grad_points.data_ptr<acc_t<scalar_t>>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return {grad_query.to(query.scalar_type()), grad_points.to(query.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(recon_fast, CUDA, m) {
  m.impl("ball_query", &ball_query_cuda);
  m.impl("ball_query_backward", &ball_query_backward_cuda);
}

}  // namespace recon_fast
