// Morton (Z-order) codes of 3D points: 10 bits per axis over the cloud's bounding cube, and a
// stable radix sort by code. Points close on the curve are close in space, which both the
// Morton-sorted kNN scan and the kd-tree build use. Capability-independent (baseline) code.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace recon_fast {

// 10 bits -> every third bit of 30.
inline uint32_t morton_spread_bits(uint32_t v) {
  v = (v | (v << 16)) & 0x030000FFu;
  v = (v | (v << 8)) & 0x0300F00Fu;
  v = (v | (v << 4)) & 0x030C30C3u;
  v = (v | (v << 2)) & 0x09249249u;
  return v;
}

// The quantisation grid of one cloud.
template <typename T>
struct MortonGrid {
  T lo[3] = {0, 0, 0};
  T scale = 0;

  void fit(const T* xs, const T* ys, const T* zs, int64_t n) {
    if (n == 0) return;
    const T* axes[3] = {xs, ys, zs};
    T hi[3];
    for (int a = 0; a < 3; ++a) {
      lo[a] = hi[a] = axes[a][0];
      for (int64_t i = 1; i < n; ++i) {
        lo[a] = std::min(lo[a], axes[a][i]);
        hi[a] = std::max(hi[a], axes[a][i]);
      }
    }
    const T extent = std::max({hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]});
    scale = extent > T(0) ? T(1023) / extent : T(0);
  }

  uint32_t code(T x, T y, T z) const {
    const T c[3] = {x, y, z};
    uint32_t out = 0;
    for (int a = 0; a < 3; ++a) {
      T q = (c[a] - lo[a]) * scale;
      q = q > T(0) ? (q < T(1023) ? q : T(1023)) : T(0);  // also maps NaN to 0
      out |= morton_spread_bits(static_cast<uint32_t>(q)) << a;
    }
    return out;
  }
};

// Sorts keys (code << 32 | payload) by their 30-bit code, stably: LSD radix sort, 10 bits per
// pass (a comparison sort's mispredicted branches cost more than the queries save on small
// clouds), so equal codes keep their payload order.
inline void morton_sort(std::vector<uint64_t>& keyed) {
  std::vector<uint64_t> scratch(keyed.size());
  for (int shift = 32; shift < 62; shift += 10) {
    int64_t count[1025] = {0};
    for (uint64_t key : keyed) ++count[((key >> shift) & 1023) + 1];
    for (int b = 0; b < 1024; ++b) count[b + 1] += count[b];
    for (uint64_t key : keyed) scratch[count[(key >> shift) & 1023]++] = key;
    keyed.swap(scratch);
  }
}

}  // namespace recon_fast
