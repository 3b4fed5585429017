// Farthest point sampling on the GPU.
//
// Each cloud is swept by one block (up to 1024 threads) that keeps, per thread, the running
// minimum distance of the points it owns, in registers (PointsPerThread > 0) or in a global
// scratch array for clouds too big for the register file (PointsPerThread == 0). Each step finds
// the farthest point with a warp-shuffle argmax, ties to the lowest index, then a second warp
// pass over the per-warp winners (one __syncthreads per step).
//
// A big cloud with few clouds in the batch would leave most of the GPU idle, so it is split over
// several blocks of a cooperative launch: each block reduces its slice, writes its winner, the
// grid synchronises, and every block reduces the winners of its cloud. The grid is sized to the
// cloud (fps_plan.h): each step's barrier and winner reduction grow with it.
//
// Matches the CPU kernel bit for bit: distances in the accumulation type in the same order, the
// chosen point is the lowest index of the largest running minimum, points with squared norm
// <= min_norm_sq are never chosen (running minimum -inf), and when no point can be chosen every
// further sample is index 0 (all running minima -inf: the lowest index wins).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cooperative_groups.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>

#include "common/checks.h"
#include "common/cuda_utils.cuh"
#include "common/pad_points.h"
#include "fps/fps.h"
#include "fps/fps_anyd.h"
#include "fps/fps_argmax_cuda.cuh"
#include "fps/fps_plan.h"

namespace recon_fast {
namespace {

using cuda::acc_t;
using cuda::kFullMask;
using cuda::kWarpSize;
using fps_argmax::block_argmax;
using fps_argmax::keep_farther;
using fps_argmax::kNoIndex;
using fps_argmax::warp_argmax;
using cuda::Point4;

constexpr int kMaxThreads = 1024;

// Most points a thread keeps in registers (x, y, z and the running minimum each); larger clouds
// use the scratch array or several blocks.
template <typename T>
constexpr int max_register_points() {
  return sizeof(T) == 8 ? 4 : 8;
}

template <typename scalar_t>
struct FpsParams {
  const scalar_t* xyz;       // (B, N, 3)
  const int64_t* lengths;    // (B,)
  const int64_t* start_idx;  // (B,)
  int64_t B, N, m;
  double threshold;           // min_norm_sq; compared in double, as pointnet2_ops does
  bool skip_near_origin;      // min_norm_sq >= 0
  int blocks_per_cloud;       // > 1: cooperative launch with a grid-wide barrier per step
  int64_t chunk;              // points per block: block g owns [g * chunk, (g + 1) * chunk)
  acc_t<scalar_t>* scratch;   // (B, N) running minima when PointsPerThread == 0
  acc_t<scalar_t>* part_dist;  // (2, B, blocks_per_cloud) per-block winners (double-buffered)
  int32_t* part_idx;
  int64_t* out;  // (B, m)
};

// Initial running minimum: +inf for a point that may be chosen, -inf for one that may not.
template <typename T>
__device__ __forceinline__ T initial_min_dist(const Point4<T>& p, double threshold,
                                              bool skip_near_origin) {
  const T norm = cuda::point_dist<2>(p.x, p.y, p.z);
  const bool eligible = !skip_near_origin || !(static_cast<double>(norm) <= threshold);
  return eligible ? cuda::positive_infinity<T>() : -cuda::positive_infinity<T>();
}

template <typename scalar_t, int PointsPerThread>
__global__ void __launch_bounds__(kMaxThreads) fps_kernel(const FpsParams<scalar_t> p) {
  using T = acc_t<scalar_t>;
  constexpr int kRegs = PointsPerThread > 0 ? PointsPerThread : 1;
  __shared__ T slot_d[2][kWarpSize];
  __shared__ int32_t slot_i[2][kWarpSize];

  const int G = p.blocks_per_cloud;
  const int64_t b = blockIdx.x / G;
  const int g = blockIdx.x % G;
  const int tid = threadIdx.x, threads = blockDim.x;
  const int64_t len = cuda::clamp_length(p.lengths, b, p.N);
  const int64_t count = len < p.m ? len : p.m;
  const scalar_t* cloud = p.xyz + b * p.N * 3;
  int64_t* out = p.out + b * p.m;

  if (g == 0) {
    for (int64_t j = count + tid; j < p.m; j += threads) out[j] = -1;
  }
  // With a grid barrier every block must take every step (clouds that are done just wait).
  const bool grid_sync = G > 1;
  const int64_t steps = grid_sync ? p.m : count;
  if (steps == 0) return;
  int64_t start = count > 0 ? p.start_idx[b] : 0;
  start = start < 0 ? 0 : (start >= len ? (len > 0 ? len - 1 : 0) : start);
  if (g == 0 && tid == 0 && count > 0) out[0] = start;

  // This block's points [lo, hi); thread tid owns lo + tid + r * threads. Indices fit in int32
  // (N < 2^31 is checked on the host), which keeps the per-point bookkeeping in few registers.
  const int64_t lo = g * p.chunk;
  const int64_t hi = lo + p.chunk < len ? lo + p.chunk : len;
  const int32_t first = static_cast<int32_t>(lo) + tid;  // this thread's first point
  const int32_t span = hi > lo ? static_cast<int32_t>(hi - lo) - tid : 0;  // owned iff r*threads < span
  Point4<T> own[kRegs];
  T min_d[kRegs];
  if constexpr (PointsPerThread > 0) {
#pragma unroll
    for (int r = 0; r < kRegs; ++r) {
      const bool owned = r * threads < span;
      own[r] = owned ? cuda::load_point<T>(cloud, first + r * threads)
                     : Point4<T>{T(0), T(0), T(0), T(0)};
      min_d[r] = owned ? initial_min_dist(own[r], p.threshold, p.skip_near_origin)
                       : -cuda::positive_infinity<T>();
    }
  } else {
    T* scratch = p.scratch + b * p.N;
    for (int64_t i = lo + tid; i < hi; i += threads) {
      scratch[i] = initial_min_dist(cuda::load_point<T>(cloud, i), p.threshold,
                                    p.skip_near_origin);
    }
  }

  const int lane = tid % kWarpSize;
  int64_t last = start;
  for (int64_t j = 1; j < steps; ++j) {
    const bool active = j < count;  // uniform over the cloud's blocks
    const int parity = static_cast<int>(j & 1);
    T best_d = -cuda::positive_infinity<T>();
    int32_t best_i = kNoIndex;
    if (active) {
      const Point4<T> chosen = cuda::load_point<T>(cloud, last);
      if constexpr (PointsPerThread > 0) {
#pragma unroll
        for (int r = 0; r < kRegs; ++r) {
          if (r * threads < span) {
            const T d = cuda::dist_between<2>(chosen, own[r]);
            min_d[r] = d < min_d[r] ? d : min_d[r];
            keep_farther(best_d, best_i, min_d[r], first + r * threads);
          }
        }
      } else {
        T* scratch = p.scratch + b * p.N;
        for (int64_t i = lo + tid; i < hi; i += threads) {
          const T d = cuda::dist_between<2>(chosen, cuda::load_point<T>(cloud, i));
          const T md = d < scratch[i] ? d : scratch[i];
          scratch[i] = md;
          keep_farther(best_d, best_i, md, static_cast<int32_t>(i));
        }
      }
      block_argmax(best_d, best_i, slot_d, slot_i, parity);
    }
    if (grid_sync) {
      const int64_t slots = (parity * p.B + b) * G;
      if (active && tid == 0) {
        p.part_dist[slots + g] = best_d;
        p.part_idx[slots + g] = best_i;
      }
      cooperative_groups::this_grid().sync();
      if (active) {
        // Every warp reduces the cloud's per-block winners itself (no extra barrier). __ldcg
        // reads from L2, where the other blocks' writes are.
        best_d = -cuda::positive_infinity<T>();
        best_i = kNoIndex;
        for (int h = lane; h < G; h += kWarpSize) {
          keep_farther(best_d, best_i, __ldcg(p.part_dist + slots + h),
                       __ldcg(p.part_idx + slots + h));
        }
        warp_argmax(best_d, best_i);
      }
    }
    if (active) {
      last = best_i;
      if (g == 0 && tid == 0) out[j] = last;
    }
  }
}

// How a batch is split: threads per block, points per thread in registers (0: scratch array),
// blocks per cloud.
struct FpsPlan {
  int threads = kMaxThreads;
  int points_per_thread = 0;
  int blocks_per_cloud = 1;
  int64_t chunk = 0;
};

int register_bucket(int64_t points) {
  return points <= 1 ? 1 : points <= 2 ? 2 : points <= 4 ? 4 : 8;
}

template <typename scalar_t>
const void* fps_kernel_for(int points_per_thread) {
  switch (points_per_thread) {
    case 1: return reinterpret_cast<const void*>(&fps_kernel<scalar_t, 1>);
    case 2: return reinterpret_cast<const void*>(&fps_kernel<scalar_t, 2>);
    case 4: return reinterpret_cast<const void*>(&fps_kernel<scalar_t, 4>);
    case 8:
      if constexpr (max_register_points<acc_t<scalar_t>>() >= 8) {
        return reinterpret_cast<const void*>(&fps_kernel<scalar_t, 8>);
      }
      break;
    case 0: return reinterpret_cast<const void*>(&fps_kernel<scalar_t, 0>);
  }
  TORCH_CHECK(false, "fps: no kernel for ", points_per_thread, " points per thread");
  return nullptr;
}

// Blocks of `kernel` (kMaxThreads threads) that can be resident at once: the limit of a
// cooperative launch. 0 when the device cannot launch cooperatively.
int max_cooperative_blocks(const void* kernel) {
  const int device = c10::cuda::current_device();
  int supported = 0, sms = 0, per_sm = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&supported, cudaDevAttrCooperativeLaunch, device));
  if (!supported) return 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kMaxThreads, 0));
  return sms * per_sm;
}

template <typename scalar_t>
FpsPlan plan_fps(int64_t B, int64_t N) {
  constexpr int kRegMax = max_register_points<acc_t<scalar_t>>();
  FpsPlan plan;
  if (N <= int64_t(kMaxThreads) * kRegMax) {
    // One block per cloud, about 4 points per thread (fewer threads: cheaper block reductions).
    plan.threads = static_cast<int>(
        std::min<int64_t>(kMaxThreads, cuda::round_up(std::max<int64_t>(cuda::ceil_div(N, 4), 1),
                                                      kWarpSize)));
    plan.points_per_thread = register_bucket(cuda::ceil_div(N, plan.threads));
    plan.chunk = N;
    return plan;
  }
  // Too big for one block's registers: several blocks per cloud if they can all be resident,
  // as many as the cloud needs (fps_plan.h), not as many as fit.
  const int64_t max_blocks = max_cooperative_blocks(fps_kernel_for<scalar_t>(kRegMax));
  const int64_t G = fps_plan::register_blocks_per_cloud(B, N, kMaxThreads,
                                                        int64_t(kMaxThreads) * kRegMax, max_blocks);
  if (G > 0) {
    const int64_t chunk = cuda::ceil_div(N, G);
    const int ppt = register_bucket(cuda::ceil_div(chunk, kMaxThreads));
    if (B * G <= max_cooperative_blocks(fps_kernel_for<scalar_t>(ppt))) {
      plan.points_per_thread = ppt;
      plan.blocks_per_cloud = static_cast<int>(G);
      plan.chunk = chunk;
      return plan;
    }
  }
  // Running minima in global scratch; spread each cloud over the resident blocks when the batch
  // leaves most of them idle.
  const int64_t scratch_blocks = max_cooperative_blocks(fps_kernel_for<scalar_t>(0));
  plan.points_per_thread = 0;
  plan.blocks_per_cloud =
      static_cast<int>(fps_plan::scratch_blocks_per_cloud(B, N, kMaxThreads, scratch_blocks));
  plan.chunk = cuda::ceil_div(N, plan.blocks_per_cloud);
  return plan;
}

template <typename scalar_t>
void launch_fps(const FpsParams<scalar_t>& params, const FpsPlan& plan, cudaStream_t stream) {
  const unsigned grid = cuda::checked_grid(params.B * plan.blocks_per_cloud, "fps");
  const void* kernel = fps_kernel_for<scalar_t>(plan.points_per_thread);
  if (plan.blocks_per_cloud > 1) {
    void* args[] = {const_cast<FpsParams<scalar_t>*>(&params)};
    C10_CUDA_CHECK(cudaLaunchCooperativeKernel(kernel, dim3(grid), dim3(plan.threads), args, 0,
                                               stream));
  } else {
    void* args[] = {const_cast<FpsParams<scalar_t>*>(&params)};
    C10_CUDA_CHECK(cudaLaunchKernel(kernel, dim3(grid), dim3(plan.threads), args, 0, stream));
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor fps_cuda(const at::Tensor& xyz_in, const at::Tensor& lengths_in, int64_t m,
                    const at::Tensor& start_idx_in, double min_norm_sq) {
  check_fps_args(xyz_in, lengths_in, m, start_idx_in);
  const c10::cuda::CUDAGuard guard(xyz_in.device());
  // D = 1, 2 run the 3-D kernels on zero-padded points (exact, common/pad_points.h).
  const at::Tensor xyz = pad_points_to_3d(xyz_in.contiguous()), lengths = lengths_in.contiguous(),
                   start_idx = start_idx_in.contiguous();
  const int64_t B = xyz.size(0), N = xyz.size(1);
  TORCH_CHECK_VALUE(N <= std::numeric_limits<int32_t>::max(), "fps: xyz has ", N,
                    " points per cloud; at most 2^31 - 1 are supported");
  at::Tensor idx = at::empty({B, m}, xyz.options().dtype(at::kLong));
  if (B == 0 || m == 0) return idx;
  if (xyz.size(2) != 3) {  // D > 3: the general kernel (fps_anyd_cuda.cu)
    fps_anyd_cuda(xyz, lengths, m, start_idx, min_norm_sq, idx);
    return idx;
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, xyz.scalar_type(), "fps_cuda", [&] {
    using T = acc_t<scalar_t>;
    const FpsPlan plan = plan_fps<scalar_t>(B, N);
    at::Tensor scratch, part_dist, part_idx;
    const auto acc_options = xyz.options().dtype(at::toOpMathType(xyz.scalar_type()));
    if (plan.points_per_thread == 0) scratch = at::empty({B, N}, acc_options);
    if (plan.blocks_per_cloud > 1) {
      part_dist = at::empty({2, B, plan.blocks_per_cloud}, acc_options);
      part_idx = at::empty({2, B, plan.blocks_per_cloud}, xyz.options().dtype(at::kInt));
    }
    FpsParams<scalar_t> params;
    params.xyz = xyz.data_ptr<scalar_t>();
    params.lengths = lengths.data_ptr<int64_t>();
    params.start_idx = start_idx.data_ptr<int64_t>();
    params.B = B;
    params.N = N;
    params.m = m;
    params.threshold = min_norm_sq;
    params.skip_near_origin = min_norm_sq >= 0;
    params.blocks_per_cloud = plan.blocks_per_cloud;
    params.chunk = plan.chunk;
    params.scratch = scratch.defined() ? scratch.data_ptr<T>() : nullptr;
    params.part_dist = part_dist.defined() ? part_dist.data_ptr<T>() : nullptr;
    params.part_idx = part_idx.defined() ? part_idx.data_ptr<int32_t>() : nullptr;
    params.out = idx.data_ptr<int64_t>();
    launch_fps<scalar_t>(params, plan, stream);
  });
  return idx;
}

}  // namespace

TORCH_LIBRARY_IMPL(recon_fast, CUDA, m) { m.impl("fps", &fps_cuda); }

}  // namespace recon_fast
