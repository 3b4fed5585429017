// Backward of "distance to a chosen neighbour", shared by kNN and Chamfer on the CPU:
//   d = dist(q, p[idx])  =>  dq += g * dd/dq,  dp[idx] -= g * dd/dq
// with dd/dq = 2 (q - p) for squared L2 and sign(q - p) for L1. Slots with idx < 0 (padding)
// contribute nothing.
#pragma once

#include <cstdint>

#include "common/cpu_utils.h"

namespace recon_fast {

template <typename T>
inline T sign_of(T v) {
  return static_cast<T>((v > 0) - (v < 0));
}

// q: (Q, 3) queries, p: (P, 3) points, idx/grad: (Q, K). grad_q: (Q, 3), grad_p: (P, 3), both in
// the accumulation type and accumulated into (+=).
template <typename scalar_t, typename T = acc_type<scalar_t>>
void accumulate_neighbor_grads(const scalar_t* q, const scalar_t* p, const int64_t* idx,
                               const scalar_t* grad, int64_t Q, int64_t K, int64_t P, int norm,
                               T* grad_q, T* grad_p) {
  for (int64_t i = 0; i < Q; ++i) {
    const T qx = static_cast<T>(q[3 * i]), qy = static_cast<T>(q[3 * i + 1]),
            qz = static_cast<T>(q[3 * i + 2]);
    for (int64_t k = 0; k < K; ++k) {
      const int64_t j = idx[i * K + k];
      if (j < 0 || j >= P) continue;
      const T g = static_cast<T>(grad[i * K + k]);
      const T d[3] = {qx - static_cast<T>(p[3 * j]), qy - static_cast<T>(p[3 * j + 1]),
                      qz - static_cast<T>(p[3 * j + 2])};
      for (int a = 0; a < 3; ++a) {
        const T v = norm == 2 ? T(2) * d[a] * g : sign_of(d[a]) * g;
        grad_q[3 * i + a] += v;
        grad_p[3 * j + a] -= v;
      }
    }
  }
}

}  // namespace recon_fast
