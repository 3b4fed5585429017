// k nearest neighbours in any point dimension D on the GPU (the 3-D kernels: knn_cuda.cu).
//
// One thread per query; a block's 128 queries belong to one cloud and share tiles of its points,
// staged through shared memory in the accumulation type, kChunk coordinates at a time: each
// thread holds the partial distances of its query to the tile's kTilePoints points in registers
// and adds the coordinates d = 0, 1, ... in order (the CPU kernels' and the reference's order;
// coordinates past D are zero on both sides and add +0, which changes nothing). The sorted
// list of the k best lives in global scratch (distances) and the output (indices); points arrive
// in index order, so strict `<` against the k-th best and insertion after equal distances give
// the (distance, index) order of every other path.
//
// The backward runs one thread per query row: the query gradient is summed in the CPU kernel's
// order, the point gradients are added with atomics into a float32 (float64) buffer.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <tuple>

#include "common/cuda_utils.cuh"
#include "knn/knn_anyd.h"

namespace recon_fast {
namespace {

using cuda::acc_t;

constexpr int kQueriesPerBlock = 128;
constexpr int kTilePoints = 32;
constexpr int kBackwardThreads = 256;

template <typename scalar_t>
struct KnnAnyDParams {
  const scalar_t* query;   // (B, M, D)
  const scalar_t* points;  // (B, N, D)
  const int64_t* query_lengths;
  const int64_t* point_lengths;
  int64_t B, M, N, D;
  int64_t k;
  acc_t<scalar_t>* scratch;  // (B, M, k) list distances
  scalar_t* dist;            // (B, M, k)
  int64_t* idx;              // (B, M, k)
};

template <int Norm, typename T>
__device__ __forceinline__ T coordinate_term(T diff) {
  if constexpr (Norm == 2) {
    return cuda::mul_rn(diff, diff);
  } else {
    return cuda::abs_of(diff);
  }
}

// kChunk: coordinates staged per round (4, 8 or 16: D rounded up to a power of two, at most 16;
// the op runs this kernel for D > 3).
template <typename scalar_t, int Norm, int kChunk>
__global__ void __launch_bounds__(kQueriesPerBlock) knn_anyd_kernel(const KnnAnyDParams<scalar_t> p) {
  using T = acc_t<scalar_t>;
  __shared__ T tile[kTilePoints][kChunk];

  const int64_t blocks_per_cloud = cuda::ceil_div(p.M, kQueriesPerBlock);
  const int64_t b = blockIdx.x / blocks_per_cloud;
  const int64_t first_query = (blockIdx.x % blocks_per_cloud) * kQueriesPerBlock;
  const int64_t qi = first_query + threadIdx.x;
  const int64_t qlen = cuda::clamp_length(p.query_lengths, b, p.M);
  const int64_t plen = cuda::clamp_length(p.point_lengths, b, p.N);
  const bool active = qi < qlen;
  const int64_t D = p.D, k = p.k;
  const int64_t row = b * p.M + qi;

  T* list_d = p.scratch + row * k;
  int64_t* list_i = p.idx + row * k;
  if (qi < p.M) {
    for (int64_t s = 0; s < k; ++s) {
      list_d[s] = cuda::positive_infinity<T>();
      list_i[s] = -1;
    }
  }
  const scalar_t* q = p.query + row * D;
  const scalar_t* cloud = p.points + b * p.N * D;
  T worst = cuda::positive_infinity<T>();
  int64_t count = 0;

  // Every thread of the block takes part in the tile loads (block-uniform condition).
  if (first_query < qlen) {
    for (int64_t t0 = 0; t0 < plen; t0 += kTilePoints) {
      const int tile_len = static_cast<int>(plen - t0 < kTilePoints ? plen - t0 : kTilePoints);
      T acc[kTilePoints];
#pragma unroll
      for (int s = 0; s < kTilePoints; ++s) acc[s] = T(0);
      for (int64_t d0 = 0; d0 < D; d0 += kChunk) {
        T qc[kChunk];
#pragma unroll
        for (int c = 0; c < kChunk; ++c) {
          qc[c] = active && d0 + c < D ? static_cast<T>(q[d0 + c]) : T(0);
        }
        __syncthreads();  // the previous chunk is no longer read
        for (int e = threadIdx.x; e < kTilePoints * kChunk; e += kQueriesPerBlock) {
          const int s = e / kChunk, c = e % kChunk;
          tile[s][c] = s < tile_len && d0 + c < D
                           ? static_cast<T>(cloud[(t0 + s) * D + d0 + c]) : T(0);
        }
        __syncthreads();
#pragma unroll
        for (int s = 0; s < kTilePoints; ++s) {
#pragma unroll
          for (int c = 0; c < kChunk; ++c) {
            acc[s] = cuda::add_rn(acc[s], coordinate_term<Norm>(cuda::sub_rn(qc[c], tile[s][c])));
          }
        }
      }
      if (!active) continue;
      for (int s = 0; s < tile_len; ++s) {
        const T d = acc[s];
        if (!(d < worst)) continue;
        int64_t slot = count < k ? count++ : k - 1;
        while (slot > 0 && list_d[slot - 1] > d) {
          list_d[slot] = list_d[slot - 1];
          list_i[slot] = list_i[slot - 1];
          --slot;
        }
        list_d[slot] = d;
        list_i[slot] = t0 + s;
        if (count == k) worst = list_d[k - 1];
      }
    }
  }

  if (qi >= p.M) return;
  for (int64_t s = 0; s < k; ++s) {
    const bool found = active && s < count;
    p.dist[row * k + s] = static_cast<scalar_t>(found ? list_d[s] : T(0));
    if (!found) list_i[s] = -1;
  }
}

template <typename scalar_t, int Norm>
void launch_knn_anyd(const KnnAnyDParams<scalar_t>& params, cudaStream_t stream) {
  const unsigned grid = cuda::checked_grid(
      params.B * cuda::ceil_div(params.M, kQueriesPerBlock), "knn");
  if (params.D <= 4) {
    knn_anyd_kernel<scalar_t, Norm, 4><<<grid, kQueriesPerBlock, 0, stream>>>(params);
  } else if (params.D <= 8) {
    knn_anyd_kernel<scalar_t, Norm, 8><<<grid, kQueriesPerBlock, 0, stream>>>(params);
  } else {
    knn_anyd_kernel<scalar_t, Norm, 16><<<grid, kQueriesPerBlock, 0, stream>>>(params);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Row (b, i): grad_query[b, i] = sum_k v_k, grad_points[b, idx_k] -= v_k, with per coordinate
// v = (2 * (q - p)) * g (squared L2) or sign(q - p) * g (L1).
template <typename scalar_t>
__global__ void __launch_bounds__(kBackwardThreads)
    knn_backward_anyd_kernel(const scalar_t* __restrict__ grad_dist,
                             const scalar_t* __restrict__ query,
                             const scalar_t* __restrict__ points, const int64_t* __restrict__ idx,
                             int64_t B, int64_t M, int64_t N, int64_t D, int64_t K, int norm,
                             acc_t<scalar_t>* __restrict__ grad_query,
                             acc_t<scalar_t>* __restrict__ grad_points) {
  using T = acc_t<scalar_t>;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= B * M) return;
  const int64_t b = t / M;
  T* gq = grad_query + t * D;  // this thread's row only: no atomics, zeros on entry
  for (int64_t kk = 0; kk < K; ++kk) {
    const int64_t j = idx[t * K + kk];
    if (j < 0 || j >= N) continue;
    const T g = static_cast<T>(grad_dist[t * K + kk]);
    const scalar_t* pj = points + (b * N + j) * D;
    T* gp = grad_points + (b * N + j) * D;
    for (int64_t d = 0; d < D; ++d) {
      const T diff = cuda::sub_rn(static_cast<T>(query[t * D + d]), static_cast<T>(pj[d]));
      const T v = norm == 2 ? cuda::mul_rn(cuda::mul_rn(T(2), diff), g)
                            : cuda::mul_rn(cuda::sign_of(diff), g);
      gq[d] = cuda::add_rn(gq[d], v);
      atomicAdd(gp + d, -v);
    }
  }
}

}  // namespace

void knn_anyd_cuda(const at::Tensor& query, const at::Tensor& points,
                   const at::Tensor& query_lengths, const at::Tensor& point_lengths, int64_t k,
                   int64_t norm, at::Tensor& dist, at::Tensor& idx) {
  const int64_t B = query.size(0), M = query.size(1), N = points.size(1), D = query.size(2);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, query.scalar_type(), "knn_anyd_cuda",
                                  [&] {
    at::Tensor scratch =
        at::empty({B, M, k}, query.options().dtype(at::toOpMathType(query.scalar_type())));
    KnnAnyDParams<scalar_t> params;
    params.query = query.data_ptr<scalar_t>();
    params.points = points.data_ptr<scalar_t>();
    params.query_lengths = query_lengths.data_ptr<int64_t>();
    params.point_lengths = point_lengths.data_ptr<int64_t>();
    params.B = B;
    params.M = M;
    params.N = N;
    params.D = D;
    params.k = k;
    params.scratch = scratch.data_ptr<acc_t<scalar_t>>();
    params.dist = dist.data_ptr<scalar_t>();
    params.idx = idx.data_ptr<int64_t>();
    if (norm == 2) {
      launch_knn_anyd<scalar_t, 2>(params, stream);
    } else {
      launch_knn_anyd<scalar_t, 1>(params, stream);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> knn_backward_anyd_cuda(const at::Tensor& grad_dist,
                                                          const at::Tensor& query,
                                                          const at::Tensor& points,
                                                          const at::Tensor& idx, int64_t norm) {
  const int64_t B = query.size(0), M = query.size(1), N = points.size(1), D = query.size(2),
                K = idx.size(2);
  const auto acc_options = query.options().dtype(at::toOpMathType(query.scalar_type()));
  at::Tensor grad_query = at::zeros({B, M, D}, acc_options);
  at::Tensor grad_points = at::zeros({B, N, D}, acc_options);
  if (B * M > 0) {
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    const unsigned grid =
        cuda::checked_grid(cuda::ceil_div(B * M, kBackwardThreads), "knn_backward");
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, query.scalar_type(),
                                    "knn_backward_anyd_cuda", [&] {
      using T = acc_t<scalar_t>;
      knn_backward_anyd_kernel<scalar_t><<<grid, kBackwardThreads, 0, stream>>>(
          grad_dist.data_ptr<scalar_t>(), query.data_ptr<scalar_t>(),
          points.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(), B, M, N, D, K,
          static_cast<int>(norm), grad_query.data_ptr<T>(), grad_points.data_ptr<T>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return {grad_query.to(query.scalar_type()), grad_points.to(query.scalar_type())};
}

}  // namespace recon_fast
