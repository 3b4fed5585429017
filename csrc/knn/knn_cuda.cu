// k nearest neighbours on the GPU.
//
// One warp per query. The block's queries belong to one cloud and share tiles of its points,
// staged through shared memory in the accumulation type. Each step a lane computes the distance
// to one point of the tile; lanes that beat the current k-th best are inserted one at a time (in
// lane order, i.e. index order) into a sorted list spread over the warp: slot s lives in register
// s / 32 of lane s % 32, and an insertion is a one-slot shift done with shuffles. Since points
// arrive in increasing index order, strict `<` against the k-th best and insertion after equal
// distances give exactly the CPU kernel's (distance, index) order.
//
// k up to 32 * kMaxSlotRegs uses the warp lists; larger k falls back to one thread per query
// with its sorted list in global scratch.
//
// The backward runs one thread per query row: the query gradient is summed in registers in the
// CPU kernel's order, the point gradients are added with atomics into a float32 (float64)
// buffer, then cast to the input dtype.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>
#include <tuple>

#include "common/checks.h"
#include "common/cuda_utils.cuh"
#include "common/pad_points.h"
#include "knn/knn.h"
#include "knn/knn_anyd.h"

namespace recon_fast {
namespace {

using cuda::acc_t;
using cuda::kFullMask;
using cuda::kWarpSize;
using cuda::Point4;

constexpr int kWarpsPerBlock = 8;  // queries per block
constexpr int kThreads = kWarpsPerBlock * kWarpSize;
constexpr int kTile = 512;         // points per shared-memory tile
constexpr int kMaxSlotRegs = 4;    // warp lists hold k <= 128
constexpr int kGenericThreads = 128;
constexpr int kBackwardThreads = 256;

template <typename scalar_t>
struct KnnParams {
  const scalar_t* query;   // (B, M, 3)
  const scalar_t* points;  // (B, N, 3)
  const int64_t* query_lengths;
  const int64_t* point_lengths;
  int64_t B, M, N;
  int k;
  acc_t<scalar_t>* scratch;  // (B, M, k) list distances of the generic kernel
  scalar_t* dist;            // (B, M, k)
  int64_t* idx;              // (B, M, k)
};

// Inserts (d, i) into the warp's sorted list. Slot s (register s / 32, lane s % 32) takes its
// own value if <= d, else its predecessor's if that is > d, else (d, i): the list with (d, i)
// placed after every entry <= d. All shuffles read the old list before anything is written.
template <int Regs, typename T>
__device__ __forceinline__ void warp_list_insert(T (&list_d)[Regs], int32_t (&list_i)[Regs], T d,
                                                 int32_t i, int lane) {
  const int from = (lane + kWarpSize - 1) % kWarpSize;
  T rot_d[Regs];
  int32_t rot_i[Regs];
#pragma unroll
  for (int r = 0; r < Regs; ++r) {
    rot_d[r] = __shfl_sync(kFullMask, list_d[r], from);
    rot_i[r] = __shfl_sync(kFullMask, list_i[r], from);
  }
#pragma unroll
  for (int r = 0; r < Regs; ++r) {
    // Predecessor of slot (r, lane): (r, lane - 1), or (r - 1, 31) for lane 0; slot 0 has none.
    T prev_d = rot_d[r];
    int32_t prev_i = rot_i[r];
    if (lane == 0) {
      prev_d = r > 0 ? rot_d[r > 0 ? r - 1 : 0] : -cuda::positive_infinity<T>();
      prev_i = r > 0 ? rot_i[r > 0 ? r - 1 : 0] : -1;
    }
    if (!(list_d[r] <= d)) {
      const bool shift = prev_d > d;
      list_d[r] = shift ? prev_d : d;
      list_i[r] = shift ? prev_i : i;
    }
  }
}

// The distance in slot `slot` (warp-uniform), broadcast to every lane.
template <int Regs, typename T>
__device__ __forceinline__ T warp_list_at(const T (&list_d)[Regs], int slot) {
  // Select with arithmetic masks rather than an index, so the list never leaves registers.
  const int reg = slot / kWarpSize;
  T v = T(0);
#pragma unroll
  for (int r = 0; r < Regs; ++r) {
    const T w = __shfl_sync(kFullMask, list_d[r], slot % kWarpSize);
    v = reg == r ? w : v;
  }
  return v;
}

template <typename scalar_t, int Norm, int Regs>
__global__ void __launch_bounds__(kThreads) knn_warp_kernel(const KnnParams<scalar_t> p) {
  using T = acc_t<scalar_t>;
  __shared__ Point4<T> tile[kTile];

  const int64_t blocks_per_cloud = cuda::ceil_div(p.M, kWarpsPerBlock);
  const int64_t b = blockIdx.x / blocks_per_cloud;
  const int64_t first_query = (blockIdx.x % blocks_per_cloud) * kWarpsPerBlock;
  const int lane = threadIdx.x % kWarpSize;
  const int64_t qi = first_query + threadIdx.x / kWarpSize;  // this warp's query
  const int64_t qlen = cuda::clamp_length(p.query_lengths, b, p.M);
  const int64_t plen = cuda::clamp_length(p.point_lengths, b, p.N);
  const bool active = qi < qlen;  // warp-uniform

  T list_d[Regs];
  int32_t list_i[Regs];
#pragma unroll
  for (int r = 0; r < Regs; ++r) {
    list_d[r] = cuda::positive_infinity<T>();
    list_i[r] = -1;
  }
  const Point4<T> q = active ? cuda::load_point<T>(p.query, b * p.M + qi)
                             : Point4<T>{T(0), T(0), T(0), T(0)};
  const scalar_t* cloud = p.points + b * p.N * 3;
  T worst = cuda::positive_infinity<T>();  // the k-th best distance so far (warp-uniform)

  // Every warp of the block takes part in the tile loads (block-uniform condition).
  if (first_query < qlen) {
    for (int64_t t0 = 0; t0 < plen; t0 += kTile) {
      const int tile_len = static_cast<int>(plen - t0 < kTile ? plen - t0 : kTile);
      __syncthreads();  // the previous tile is no longer read
      for (int s = threadIdx.x; s < tile_len; s += kThreads) {
        tile[s] = cuda::load_point<T>(cloud, t0 + s);
      }
      __syncthreads();
      if (!active) continue;
      for (int base = 0; base < tile_len; base += kWarpSize) {
        const int s = base + lane;
        T d = cuda::positive_infinity<T>();
        bool candidate = false;
        if (s < tile_len) {
          d = cuda::dist_between<Norm>(q, tile[s]);
          candidate = d < worst;
        }
        unsigned mask = __ballot_sync(kFullMask, candidate);
        while (mask != 0) {
          const int src = __ffs(mask) - 1;
          mask &= mask - 1;
          const T cd = __shfl_sync(kFullMask, d, src);
          if (cd < worst) {
            warp_list_insert<Regs>(list_d, list_i, cd, static_cast<int32_t>(t0 + base + src),
                                   lane);
            worst = warp_list_at<Regs>(list_d, p.k - 1);
          }
        }
      }
    }
  }

  if (qi >= p.M) return;
  const int64_t row = (b * p.M + qi) * p.k;
#pragma unroll
  for (int r = 0; r < Regs; ++r) {
    const int slot = r * kWarpSize + lane;
    if (slot < p.k) {
      const bool found = active && list_i[r] >= 0;
      p.dist[row + slot] = static_cast<scalar_t>(found ? list_d[r] : T(0));
      p.idx[row + slot] = found ? list_i[r] : -1;
    }
  }
}

// Any k: one thread per query, its sorted list in global scratch (distances) and in the output
// indices, each point inserted by shifting the larger entries up one slot.
template <typename scalar_t, int Norm>
__global__ void __launch_bounds__(kGenericThreads) knn_generic_kernel(const KnnParams<scalar_t> p) {
  using T = acc_t<scalar_t>;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= p.B * p.M) return;
  const int64_t b = t / p.M, qi = t - b * p.M;
  const int k = p.k;
  T* list_d = p.scratch + t * k;
  int64_t* list_i = p.idx + t * k;
  for (int s = 0; s < k; ++s) {
    list_d[s] = cuda::positive_infinity<T>();
    list_i[s] = -1;
  }
  if (qi < cuda::clamp_length(p.query_lengths, b, p.M)) {
    const int64_t plen = cuda::clamp_length(p.point_lengths, b, p.N);
    const Point4<T> q = cuda::load_point<T>(p.query, t);
    const scalar_t* cloud = p.points + b * p.N * 3;
    T worst = cuda::positive_infinity<T>();
    for (int64_t j = 0; j < plen; ++j) {
      const T d = cuda::dist_between<Norm>(q, cuda::load_point<T>(cloud, j));
      if (!(d < worst)) continue;
      int s = k - 1;
      while (s > 0 && list_d[s - 1] > d) {
        list_d[s] = list_d[s - 1];
        list_i[s] = list_i[s - 1];
        --s;
      }
      list_d[s] = d;
      list_i[s] = j;
      worst = list_d[k - 1];
    }
  }
  for (int s = 0; s < k; ++s) {
    p.dist[t * k + s] = static_cast<scalar_t>(list_i[s] >= 0 ? list_d[s] : T(0));
  }
}

template <typename scalar_t, int Norm>
void launch_knn(const KnnParams<scalar_t>& params, cudaStream_t stream) {
  const int regs = static_cast<int>(cuda::ceil_div(params.k, kWarpSize));
  if (regs <= kMaxSlotRegs) {
    const unsigned grid =
        cuda::checked_grid(params.B * cuda::ceil_div(params.M, kWarpsPerBlock), "knn");
    if (regs == 1) {
      knn_warp_kernel<scalar_t, Norm, 1><<<grid, kThreads, 0, stream>>>(params);
    } else if (regs == 2) {
      knn_warp_kernel<scalar_t, Norm, 2><<<grid, kThreads, 0, stream>>>(params);
    } else {
      knn_warp_kernel<scalar_t, Norm, kMaxSlotRegs><<<grid, kThreads, 0, stream>>>(params);
    }
  } else {
    const unsigned grid =
        cuda::checked_grid(cuda::ceil_div(params.B * params.M, kGenericThreads), "knn");
    knn_generic_kernel<scalar_t, Norm><<<grid, kGenericThreads, 0, stream>>>(params);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

std::tuple<at::Tensor, at::Tensor> knn_cuda(const at::Tensor& query_in, const at::Tensor& points_in,
                                            const at::Tensor& query_lengths_in,
                                            const at::Tensor& point_lengths_in, int64_t k,
                                            int64_t norm) {
  check_knn_args(query_in, points_in, query_lengths_in, point_lengths_in, k, norm);
  const c10::cuda::CUDAGuard guard(query_in.device());
  // D = 1, 2 run the 3-D kernels on zero-padded points (exact, common/pad_points.h).
  const at::Tensor query = pad_points_to_3d(query_in.contiguous()),
                   points = pad_points_to_3d(points_in.contiguous()),
                   query_lengths = query_lengths_in.contiguous(),
                   point_lengths = point_lengths_in.contiguous();
  const int64_t B = query.size(0), M = query.size(1), N = points.size(1);
  TORCH_CHECK_VALUE(N <= std::numeric_limits<int32_t>::max(), "knn: points has ", N,
                    " points per cloud; at most 2^31 - 1 are supported");
  at::Tensor dist = at::empty({B, M, k}, query.options());
  at::Tensor idx = at::empty({B, M, k}, query.options().dtype(at::kLong));
  if (B == 0 || M == 0) return {dist, idx};
  if (query.size(2) != 3) {  // D > 3: the general kernels (knn_anyd_cuda.cu)
    knn_anyd_cuda(query, points, query_lengths, point_lengths, k, norm, dist, idx);
    return {dist, idx};
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, query.scalar_type(), "knn_cuda", [&] {
    at::Tensor scratch;
    if (cuda::ceil_div(k, kWarpSize) > kMaxSlotRegs) {
      scratch = at::empty({B, M, k}, query.options().dtype(at::toOpMathType(query.scalar_type())));
    }
    KnnParams<scalar_t> params;
    params.query = query.data_ptr<scalar_t>();
    params.points = points.data_ptr<scalar_t>();
    params.query_lengths = query_lengths.data_ptr<int64_t>();
    params.point_lengths = point_lengths.data_ptr<int64_t>();
    params.B = B;
    params.M = M;
    params.N = N;
    params.k = static_cast<int>(k);
    params.scratch = scratch.defined() ? scratch.data_ptr<acc_t<scalar_t>>() : nullptr;
    params.dist = dist.data_ptr<scalar_t>();
    params.idx = idx.data_ptr<int64_t>();
    if (norm == 2) {
      launch_knn<scalar_t, 2>(params, stream);
    } else {
      launch_knn<scalar_t, 1>(params, stream);
    }
  });
  return {dist, idx};
}

// Row (b, i): grad_query[b, i] = sum_k v_k, grad_points[b, idx_k] -= v_k, v_k = dd/dq * g_k.
template <typename scalar_t>
__global__ void __launch_bounds__(kBackwardThreads)
    knn_backward_kernel(const scalar_t* __restrict__ grad_dist, const scalar_t* __restrict__ query,
                        const scalar_t* __restrict__ points, const int64_t* __restrict__ idx,
                        int64_t B, int64_t M, int64_t N, int64_t K, int norm,
                        acc_t<scalar_t>* __restrict__ grad_query,
                        acc_t<scalar_t>* __restrict__ grad_points) {
  using T = acc_t<scalar_t>;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= B * M) return;
  const int64_t b = t / M;
  const Point4<T> q = cuda::load_point<T>(query, t);
  T sum[3] = {T(0), T(0), T(0)};
  for (int64_t kk = 0; kk < K; ++kk) {
    const int64_t j = idx[t * K + kk];
    if (j < 0 || j >= N) continue;
    const Point4<T> v = cuda::neighbor_grad(q, cuda::load_point<T>(points, b * N + j),
                                            static_cast<T>(grad_dist[t * K + kk]), norm);
    const T comps[3] = {v.x, v.y, v.z};
    T* gp = grad_points + (b * N + j) * 3;
#pragma unroll
    for (int a = 0; a < 3; ++a) {
      sum[a] = cuda::add_rn(sum[a], comps[a]);
      atomicAdd(gp + a, -comps[a]);
    }
  }
#pragma unroll
  for (int a = 0; a < 3; ++a) grad_query[t * 3 + a] = sum[a];
}

std::tuple<at::Tensor, at::Tensor> knn_backward_cuda(const at::Tensor& grad_dist_in,
                                                     const at::Tensor& query_in,
                                                     const at::Tensor& points_in,
                                                     const at::Tensor& idx_in, int64_t norm) {
  check_knn_backward_args(grad_dist_in, query_in, points_in, idx_in, norm);
  const c10::cuda::CUDAGuard guard(query_in.device());
  const at::Tensor grad_dist = grad_dist_in.contiguous(), query = query_in.contiguous(),
                   points = points_in.contiguous(), idx = idx_in.contiguous();
  if (query.size(2) != 3) return knn_backward_anyd_cuda(grad_dist, query, points, idx, norm);
  const int64_t B = query.size(0), M = query.size(1), N = points.size(1), K = idx.size(2);
  const auto acc_options = query.options().dtype(at::toOpMathType(query.scalar_type()));
  at::Tensor grad_query = at::empty({B, M, 3}, acc_options);
  at::Tensor grad_points = at::zeros({B, N, 3}, acc_options);
  if (B * M > 0) {
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    const unsigned grid =
        cuda::checked_grid(cuda::ceil_div(B * M, kBackwardThreads), "knn_backward");
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, query.scalar_type(),
                                    "knn_backward_cuda", [&] {
      using T = acc_t<scalar_t>;
      knn_backward_kernel<scalar_t><<<grid, kBackwardThreads, 0, stream>>>(
          grad_dist.data_ptr<scalar_t>(), query.data_ptr<scalar_t>(),
          points.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(), B, M, N, K,
          static_cast<int>(norm), grad_query.data_ptr<T>(), grad_points.data_ptr<T>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return {grad_query.to(query.scalar_type()), grad_points.to(query.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(recon_fast, CUDA, m) {
  m.impl("knn", &knn_cuda);
  m.impl("knn_backward", &knn_backward_cuda);
}

}  // namespace recon_fast
