// Capability-independent helpers of the CPU kernels: accumulation types, scalar distance formulas
// every kernel and the Python reference share, lengths, and work splitting. Code here is compiled
// for the baseline instruction set and may be inlined into any capability's kernels (see
// cpu_multiversion.h); vector code lives in cpu_simd.h.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <type_traits>
#include <vector>

namespace recon_fast {

// float for float16/bfloat16/float32, double for float64.
template <typename scalar_t>
using acc_type = at::opmath_type<scalar_t>;

// Distances in the one order every implementation uses, ((dx*dx + dy*dy) + dz*dz), with no fused
// multiply-add (built with -ffp-contract=off), so CPU, CUDA and the PyTorch reference agree
// bit for bit and break ties identically.
template <typename T>
inline T sq_dist3(T dx, T dy, T dz) {
  return (dx * dx + dy * dy) + dz * dz;
}

template <typename T>
inline T abs_dist3(T dx, T dy, T dz) {
  return (std::abs(dx) + std::abs(dy)) + std::abs(dz);
}

template <int Norm, typename T>
inline T point_dist(T dx, T dy, T dz) {
  if constexpr (Norm == 2) {
    return sq_dist3(dx, dy, dz);
  } else {
    return abs_dist3(dx, dy, dz);
  }
}

// Reads lengths (int64, (B,)) into a vector, checking 0 <= length <= max_len.
inline std::vector<int64_t> read_lengths(const at::Tensor& lengths, int64_t max_len,
                                         const char* name) {
  std::vector<int64_t> out(lengths.size(0));
  const at::Tensor contiguous = lengths.contiguous();
  const int64_t* p = contiguous.data_ptr<int64_t>();
  for (size_t b = 0; b < out.size(); ++b) {
    TORCH_CHECK_VALUE(p[b] >= 0 && p[b] <= max_len, name, "[", b, "] = ", p[b],
                      " is outside [0, ", max_len, "]");
    out[b] = p[b];
  }
  return out;
}

// Runs fn(begin, end) over [0, total) in chunks of `grain` items that the threads take from a
// shared counter. at::parallel_for alone gives each thread a fixed share up front, so on a busy
// machine one descheduled thread holds the whole call back (a 2-thread FPS ran 3x slower than
// 1 thread next to other CPU-bound processes); here a late thread finds the work already done.
template <typename F>
void parallel_chunks(int64_t total, int64_t grain, const F& fn) {
  if (total <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t chunks = (total + grain - 1) / grain;
  if (chunks == 1 || at::get_num_threads() == 1 || at::in_parallel_region()) {
    fn(int64_t(0), total);
    return;
  }
  std::atomic<int64_t> next{0};
  at::parallel_for(0, std::min<int64_t>(chunks, at::get_num_threads()), 1,
                   [&](int64_t, int64_t) {
    for (int64_t c = next.fetch_add(1); c < chunks; c = next.fetch_add(1)) {
      fn(c * grain, std::min(total, (c + 1) * grain));
    }
  });
}

}  // namespace recon_fast
