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
#include <exception>
#include <functional>
#include <memory>
#include <thread>
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

// True on a thread that is running a parallel_chunks chunk (or inside an ATen parallel region):
// nested calls then run inline instead of queueing work for threads that are already busy.
inline bool& parallel_chunks_active() {
  thread_local bool active = false;
  return active;
}

inline bool in_parallel_work() { return parallel_chunks_active() || at::in_parallel_region(); }

// Shared between a parallel_chunks call and the helpers it queued. A helper may start after
// the call has returned: it then finds `closed` and leaves without touching the work.
struct ParallelChunksState {
  std::atomic<int64_t> next{0};
  std::atomic<int> working{0};
  std::atomic<bool> closed{false};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  int64_t total = 0, grain = 1, chunks = 0;
  const std::function<void(int64_t, int64_t)>* fn = nullptr;

  void run_chunks() {
    parallel_chunks_active() = true;
    for (int64_t c = next.fetch_add(1); c < chunks; c = next.fetch_add(1)) {
      (*fn)(c * grain, std::min(total, (c + 1) * grain));
    }
    parallel_chunks_active() = false;
  }
};

// Runs fn(begin, end) over [0, total) in chunks of `grain` items that the calling thread and
// helpers on ATen's inter-op threads take from a shared counter. The caller waits only for
// chunks a helper has already taken, never for a helper to start: on a busy machine (more
// runnable processes than cores) a helper may not get a core for milliseconds, and an OpenMP
// region (at::parallel_for) waits for every thread at its end, which made 2 threads slower than
// 1 there. A helper that starts late finds the work done. The wait for a taken chunk spins
// briefly, then yields the core.
template <typename F>
void parallel_chunks(int64_t total, int64_t grain, const F& fn) {
  if (total <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t chunks = (total + grain - 1) / grain;
  const int threads = at::get_num_threads();
  if (chunks == 1 || threads == 1 || in_parallel_work()) {
    fn(int64_t(0), total);
    return;
  }
  const std::function<void(int64_t, int64_t)> body = [&fn](int64_t b, int64_t e) { fn(b, e); };
  auto state = std::make_shared<ParallelChunksState>();
  state->total = total;
  state->grain = grain;
  state->chunks = chunks;
  state->fn = &body;
  const int64_t helpers = std::min<int64_t>(chunks, threads) - 1;
  for (int64_t h = 0; h < helpers; ++h) {
    at::launch([state] {
      state->working.fetch_add(1);
      if (!state->closed.load()) {
        try {
          state->run_chunks();
        } catch (...) {
          parallel_chunks_active() = false;
          if (!state->failed.exchange(true)) state->error = std::current_exception();
          state->next.store(state->chunks);  // the others stop taking chunks
        }
      }
      state->working.fetch_sub(1);
    });
  }
  try {
    state->run_chunks();
  } catch (...) {
    parallel_chunks_active() = false;
    state->next.store(state->chunks);
    state->closed.store(true);
    while (state->working.load() > 0) std::this_thread::yield();
    throw;
  }
  // Every chunk is taken. After `closed`, a helper that registers as working sees it and leaves
  // (sequentially consistent atomics); wait for those that registered before.
  state->closed.store(true);
  for (int spin = 0; state->working.load() > 0; ++spin) {
    if (spin > 2000) std::this_thread::yield();
  }
  if (state->failed.load()) std::rethrow_exception(state->error);
}

}  // namespace recon_fast
