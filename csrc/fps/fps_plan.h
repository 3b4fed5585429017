// How many blocks of a cooperative FPS launch share one cloud (host arithmetic only, no CUDA, so
// that it is tested on any machine).
//
// A cloud split over G blocks pays one grid-wide barrier per sample, and every block then
// reduces the G per-block winners: both grow with G, while the work per block per step shrinks
// as N / G. Taking every resident block (the largest grid) makes each of the thousands of steps as
// slow as possible for a cloud that a few dozen blocks sweep just as fast. So G follows the
// cloud: enough blocks for about `target_points_per_block` points each, never fewer than the
// register limit needs, never more than can be resident at once.
#pragma once

#include <algorithm>
#include <cstdint>

namespace recon_fast {
namespace fps_plan {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Points per thread the split aims for: below about four the per-step block reduction and the
// barrier dominate the distance updates.
constexpr int64_t kTargetPointsPerThread = 4;
// In the scratch path (running minima in global memory) a thread streams its points each step.
constexpr int64_t kScratchPointsPerThread = 16;

// Blocks per cloud for B clouds of N points with registers for at most `max_points_per_block`
// points per block, `threads` threads per block and `max_resident` blocks resident at once.
// 0 when even the fewest blocks the registers need cannot all be resident (use scratch instead).
inline int64_t register_blocks_per_cloud(int64_t B, int64_t N, int64_t threads,
                                         int64_t max_points_per_block, int64_t max_resident) {
  const int64_t needed = ceil_div(N, max_points_per_block);
  if (B <= 0 || B * needed > max_resident) return 0;
  const int64_t wanted = ceil_div(N, threads * kTargetPointsPerThread);
  return std::min(std::max(needed, wanted), max_resident / B);
}

// Blocks per cloud in the scratch path: spread a cloud only when the batch leaves at least half
// of the resident blocks idle, and then only as far as the cloud needs.
inline int64_t scratch_blocks_per_cloud(int64_t B, int64_t N, int64_t threads, int64_t max_resident) {
  if (B <= 0 || B * 2 > max_resident) return 1;
  const int64_t wanted = ceil_div(N, threads * kScratchPointsPerThread);
  return std::max<int64_t>(1, std::min(wanted, max_resident / B));
}

}  // namespace fps_plan
}  // namespace recon_fast
