// Chamfer nearest neighbours on the GPU.
//
// Both directions in one launch: each block takes a chunk of the queries of one cloud in one
// direction (x -> y or y -> x), one thread per query, and sweeps the other cloud through shared
// memory tiles in index order. Strict `<` keeps the lowest index among equal distances, as on
// the CPU. The backward scatters both directions' gradients with atomics into float32 (float64)
// buffers.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <tuple>

#include "chamfer/chamfer.h"
#include "common/checks.h"
#include "common/cuda_utils.cuh"

namespace recon_fast {
namespace {

using cuda::acc_t;
using cuda::kWarpSize;
using cuda::Point4;

constexpr int kMaxThreads = 256;
constexpr int kTile = 512;  // points per shared-memory tile
constexpr int kBackwardThreads = 256;

template <typename scalar_t>
struct ChamferParams {
  const scalar_t* x;  // (B, N, 3)
  const scalar_t* y;  // (B, M, 3)
  const int64_t* x_lengths;
  const int64_t* y_lengths;
  int64_t B, N, M;
  int64_t chunks_x, chunks_y;  // query chunks (of blockDim.x) per cloud in each direction
  scalar_t* dist_xy;           // (B, N)
  scalar_t* dist_yx;           // (B, M)
  int64_t* idx_xy;             // (B, N)
  int64_t* idx_yx;             // (B, M)
};

// The CPU kernel admits a first candidate whatever its distance (except NaN), so a query whose
// every distance overflows to inf still gets the lowest such index. The main sweep compares with
// `<` against +inf and misses that case; this rare fix-up restores it.
template <int Norm, typename T, typename scalar_t>
__device__ int32_t first_comparable(const Point4<T>& q, const scalar_t* cloud, int64_t plen,
                                    T& dist) {
  for (int64_t j = 0; j < plen; ++j) {
    const T d = cuda::dist_between<Norm>(q, cuda::load_point<T>(cloud, j));
    if (d == d) {
      dist = d;
      return static_cast<int32_t>(j);
    }
  }
  return -1;
}

template <typename scalar_t, int Norm>
__global__ void __launch_bounds__(kMaxThreads) chamfer_kernel(const ChamferParams<scalar_t> p) {
  using T = acc_t<scalar_t>;
  __shared__ Point4<T> tile[kTile];

  // Block -> (cloud, direction, chunk of queries); all block-uniform.
  const int64_t per_cloud = p.chunks_x + p.chunks_y;
  const int64_t b = blockIdx.x / per_cloud;
  const int64_t c = blockIdx.x % per_cloud;
  const bool x_to_y = c < p.chunks_x;
  const int64_t chunk = x_to_y ? c : c - p.chunks_x;
  const int64_t Q = x_to_y ? p.N : p.M, P = x_to_y ? p.M : p.N;
  const scalar_t* queries = (x_to_y ? p.x : p.y) + b * Q * 3;
  const scalar_t* cloud = (x_to_y ? p.y : p.x) + b * P * 3;
  const int64_t qlen = cuda::clamp_length(x_to_y ? p.x_lengths : p.y_lengths, b, Q);
  const int64_t plen = cuda::clamp_length(x_to_y ? p.y_lengths : p.x_lengths, b, P);

  const int64_t first_query = chunk * blockDim.x;
  const int64_t i = first_query + threadIdx.x;
  const bool active = i < qlen;
  const Point4<T> q = active ? cuda::load_point<T>(queries, i) : Point4<T>{T(0), T(0), T(0), T(0)};
  T best_d = cuda::positive_infinity<T>();
  int32_t best_i = -1;

  if (first_query < qlen) {  // block-uniform: every thread takes part in the tile loads
    for (int64_t t0 = 0; t0 < plen; t0 += kTile) {
      const int tile_len = static_cast<int>(plen - t0 < kTile ? plen - t0 : kTile);
      __syncthreads();  // the previous tile is no longer read
      for (int s = threadIdx.x; s < tile_len; s += blockDim.x) {
        tile[s] = cuda::load_point<T>(cloud, t0 + s);
      }
      __syncthreads();
      if (!active) continue;
      const int32_t base = static_cast<int32_t>(t0);
#pragma unroll 4
      for (int s = 0; s < tile_len; ++s) {
        const T d = cuda::dist_between<Norm>(q, tile[s]);
        if (d < best_d) {
          best_d = d;
          best_i = base + s;
        }
      }
    }
    if (active && best_i < 0) best_i = first_comparable<Norm>(q, cloud, plen, best_d);
  }

  if (i >= Q) return;
  scalar_t* dist = (x_to_y ? p.dist_xy : p.dist_yx) + b * Q;
  int64_t* idx = (x_to_y ? p.idx_xy : p.idx_yx) + b * Q;
  dist[i] = static_cast<scalar_t>(best_i >= 0 ? best_d : T(0));
  idx[i] = best_i;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> chamfer_cuda(
    const at::Tensor& x_in, const at::Tensor& y_in, const at::Tensor& x_lengths_in,
    const at::Tensor& y_lengths_in, int64_t norm) {
  check_chamfer_args(x_in, y_in, x_lengths_in, y_lengths_in, norm);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), y = y_in.contiguous(),
                   x_lengths = x_lengths_in.contiguous(), y_lengths = y_lengths_in.contiguous();
  const int64_t B = x.size(0), N = x.size(1), M = y.size(1);
  TORCH_CHECK_VALUE(std::max(N, M) <= std::numeric_limits<int32_t>::max(), "chamfer: x has ", N,
                    " and y has ", M, " points per cloud; at most 2^31 - 1 are supported");
  at::Tensor dxy = at::empty({B, N}, x.options()), dyx = at::empty({B, M}, x.options());
  at::Tensor ixy = at::empty({B, N}, x.options().dtype(at::kLong));
  at::Tensor iyx = at::empty({B, M}, x.options().dtype(at::kLong));
  if (B == 0 || N + M == 0) return {dxy, dyx, ixy, iyx};
  // Small clouds get small blocks, so thousands of 32-point patches do not leave threads idle.
  const int threads = static_cast<int>(
      std::min<int64_t>(kMaxThreads, cuda::round_up(std::max(N, M), kWarpSize)));
  const int64_t chunks_x = cuda::ceil_div(N, threads), chunks_y = cuda::ceil_div(M, threads);
  const unsigned grid = cuda::checked_grid(B * (chunks_x + chunks_y), "chamfer");
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "chamfer_cuda", [&] {
    ChamferParams<scalar_t> params;
    params.x = x.data_ptr<scalar_t>();
    params.y = y.data_ptr<scalar_t>();
    params.x_lengths = x_lengths.data_ptr<int64_t>();
    params.y_lengths = y_lengths.data_ptr<int64_t>();
    params.B = B;
    params.N = N;
    params.M = M;
    params.chunks_x = chunks_x;
    params.chunks_y = chunks_y;
    params.dist_xy = dxy.data_ptr<scalar_t>();
    params.dist_yx = dyx.data_ptr<scalar_t>();
    params.idx_xy = ixy.data_ptr<int64_t>();
    params.idx_yx = iyx.data_ptr<int64_t>();
    if (norm == 2) {
      chamfer_kernel<scalar_t, 2><<<grid, threads, 0, stream>>>(params);
    } else {
      chamfer_kernel<scalar_t, 1><<<grid, threads, 0, stream>>>(params);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {dxy, dyx, ixy, iyx};
}

// One thread per point of either cloud (x points first, then y points): v = dd/dq * g for its
// nearest neighbour j; grad_q[i] += v, grad_p[j] -= v, both with atomics since the other
// direction adds into the same rows.
template <typename scalar_t>
__global__ void __launch_bounds__(kBackwardThreads)
    chamfer_backward_kernel(const scalar_t* __restrict__ grad_xy,
                            const scalar_t* __restrict__ grad_yx, const scalar_t* __restrict__ x,
                            const scalar_t* __restrict__ y, const int64_t* __restrict__ idx_xy,
                            const int64_t* __restrict__ idx_yx, int64_t B, int64_t N, int64_t M,
                            int norm, acc_t<scalar_t>* __restrict__ grad_x,
                            acc_t<scalar_t>* __restrict__ grad_y) {
  using T = acc_t<scalar_t>;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= B * (N + M)) return;
  const bool x_to_y = t < B * N;
  const int64_t r = x_to_y ? t : t - B * N;  // row in the query cloud, (b, i) flattened
  const int64_t Q = x_to_y ? N : M, P = x_to_y ? M : N;
  const int64_t b = r / Q;
  const int64_t j = (x_to_y ? idx_xy : idx_yx)[r];
  if (j < 0 || j >= P) return;
  const scalar_t* queries = x_to_y ? x : y;
  const scalar_t* cloud = x_to_y ? y : x;
  const T g = static_cast<T>((x_to_y ? grad_xy : grad_yx)[r]);
  const Point4<T> v = cuda::neighbor_grad(cuda::load_point<T>(queries, r),
                                          cuda::load_point<T>(cloud, b * P + j), g, norm);
  T* gq = (x_to_y ? grad_x : grad_y) + r * 3;
  T* gp = (x_to_y ? grad_y : grad_x) + (b * P + j) * 3;
  const T comps[3] = {v.x, v.y, v.z};
#pragma unroll
  for (int a = 0; a < 3; ++a) {
    atomicAdd(gq + a, comps[a]);
    atomicAdd(gp + a, -comps[a]);
  }
}

std::tuple<at::Tensor, at::Tensor> chamfer_backward_cuda(
    const at::Tensor& gxy_in, const at::Tensor& gyx_in, const at::Tensor& x_in,
    const at::Tensor& y_in, const at::Tensor& ixy_in, const at::Tensor& iyx_in, int64_t norm) {
  check_chamfer_backward_args(gxy_in, gyx_in, x_in, y_in, ixy_in, iyx_in, norm);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor gxy = gxy_in.contiguous(), gyx = gyx_in.contiguous(), x = x_in.contiguous(),
                   y = y_in.contiguous(), ixy = ixy_in.contiguous(), iyx = iyx_in.contiguous();
  const int64_t B = x.size(0), N = x.size(1), M = y.size(1);
  const auto acc_options = x.options().dtype(at::toOpMathType(x.scalar_type()));
  at::Tensor grad_x = at::zeros({B, N, 3}, acc_options);
  at::Tensor grad_y = at::zeros({B, M, 3}, acc_options);
  const int64_t rows = B * (N + M);
  if (rows > 0) {
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    const unsigned grid =
        cuda::checked_grid(cuda::ceil_div(rows, kBackwardThreads), "chamfer_backward");
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                    "chamfer_backward_cuda", [&] {
      using T = acc_t<scalar_t>;
      chamfer_backward_kernel<scalar_t><<<grid, kBackwardThreads, 0, stream>>>(
          gxy.data_ptr<scalar_t>(), gyx.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(),
          y.data_ptr<scalar_t>(), ixy.data_ptr<int64_t>(), iyx.data_ptr<int64_t>(), B, N, M,
          static_cast<int>(norm), grad_x.data_ptr<T>(), grad_y.data_ptr<T>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return {grad_x.to(x.scalar_type()), grad_y.to(x.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(recon_fast, CUDA, m) {
  m.impl("chamfer", &chamfer_cuda);
  m.impl("chamfer_backward", &chamfer_backward_cuda);
}

}  // namespace recon_fast
