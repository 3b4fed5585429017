// k nearest neighbours in any point dimension on the CPU: the call into the kernel compiled for
// this CPU's instruction set (knn_anyd_cpu_simd.h) and the backward.
#include "knn/knn_anyd.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "common/cpu_utils.h"
#include "common/neighbor_grad.h"

#define RECON_FAST_SIMD_BODY "knn/knn_anyd_cpu_simd.h"
#include "common/cpu_multiversion.h"

namespace recon_fast {

void knn_anyd_cpu(const at::Tensor& query, const at::Tensor& points,
                  const std::vector<int64_t>& qlens, const std::vector<int64_t>& plens, int64_t k,
                  int64_t norm, at::Tensor& dist, at::Tensor& idx) {
  RECON_FAST_CPU_DISPATCH(knn_anyd_cpu_kernel, query, points, qlens, plens, k, norm, dist, idx);
}

std::tuple<at::Tensor, at::Tensor> knn_backward_anyd_cpu(const at::Tensor& grad_dist,
                                                         const at::Tensor& query,
                                                         const at::Tensor& points,
                                                         const at::Tensor& idx, int64_t norm) {
  const int64_t B = query.size(0), M = query.size(1), N = points.size(1), D = query.size(2),
                K = idx.size(2);
  const auto acc_options = query.options().dtype(at::toOpMathType(query.scalar_type()));
  at::Tensor grad_query = at::zeros({B, M, D}, acc_options);
  at::Tensor grad_points = at::zeros({B, N, D}, acc_options);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, query.scalar_type(),
                                  "knn_backward_anyd_cpu", [&] {
    using T = acc_type<scalar_t>;
    const scalar_t* q = query.data_ptr<scalar_t>();
    const scalar_t* p = points.data_ptr<scalar_t>();
    const scalar_t* g = grad_dist.data_ptr<scalar_t>();
    const int64_t* ids = idx.data_ptr<int64_t>();
    T* gq = grad_query.data_ptr<T>();
    T* gp = grad_points.data_ptr<T>();
    // One cloud per task: the scatter into grad_points never races. Per coordinate the same
    // operations as the 3-D backward (neighbor_grad.h): v = (2 * (q - p)) * g or sign(q - p) * g.
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        for (int64_t bm = b * M; bm < (b + 1) * M; ++bm) {
          for (int64_t s = 0; s < K; ++s) {
            const int64_t j = ids[bm * K + s];
            if (j < 0 || j >= N) continue;
            const T grad = static_cast<T>(g[bm * K + s]);
            const scalar_t* pj = p + (b * N + j) * D;
            T* gpj = gp + (b * N + j) * D;
            for (int64_t d = 0; d < D; ++d) {
              const T diff = static_cast<T>(q[bm * D + d]) - static_cast<T>(pj[d]);
              const T v = norm == 2 ? T(2) * diff * grad : sign_of(diff) * grad;
              gq[bm * D + d] += v;
              gpj[d] -= v;
            }
          }
        }
      }
    });
  });
  return {grad_query.to(query.scalar_type()), grad_points.to(query.scalar_type())};
}

}  // namespace recon_fast
