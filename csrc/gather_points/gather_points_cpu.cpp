// Gather / scatter-add of point rows on the CPU. Rows are copied whole (C contiguous values), and
// the backward parallelises over the batch so no two threads add into the same row.
#include "gather_points/gather_points.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <cstring>

#include "common/checks.h"
#include "common/cpu_utils.h"

namespace recon_fast {

void check_gather_points_args(const at::Tensor& points, const at::Tensor& idx) {
  check_points(points, "points", /*channels=*/-1);
  check_index(idx, "idx", points, "points");
  TORCH_CHECK_VALUE(idx.dim() == 2, "idx must have shape (B, S), got ", shape_str(idx));
}

void check_gather_points_backward_args(const at::Tensor& grad_out, const at::Tensor& idx,
                                       int64_t num_points) {
  check_points(grad_out, "grad_out", /*channels=*/-1);
  check_index(idx, "idx", grad_out, "grad_out");
  TORCH_CHECK_VALUE(idx.dim() == 2 && idx.size(1) == grad_out.size(1),
                    "idx must have shape (B, S) matching grad_out ", shape_str(grad_out), ", got ",
                    shape_str(idx));
  TORCH_CHECK_VALUE(num_points >= 0, "num_points must be >= 0, got ", num_points);
}

static void check_index_range(const int64_t* idx, int64_t count, int64_t N) {
  for (int64_t s = 0; s < count; ++s) {
    TORCH_CHECK_VALUE(idx[s] >= -1 && idx[s] < N, "idx holds ", idx[s],
                      ", outside [-1, N) = [-1, ", N, ")");
  }
}

at::Tensor gather_points_cpu(const at::Tensor& points_in, const at::Tensor& idx_in) {
  check_gather_points_args(points_in, idx_in);
  const at::Tensor points = points_in.contiguous(), idx = idx_in.contiguous();
  const int64_t B = points.size(0), N = points.size(1), C = points.size(2), S = idx.size(1);
  check_index_range(idx.data_ptr<int64_t>(), B * S, N);
  at::Tensor out = at::empty({B, S, C}, points.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, points.scalar_type(),
                                  "gather_points_cpu", [&] {
    const scalar_t* src = points.data_ptr<scalar_t>();
    const int64_t* ids = idx.data_ptr<int64_t>();
    scalar_t* dst = out.data_ptr<scalar_t>();
    const int64_t grain = std::max<int64_t>(1, 2048 / std::max<int64_t>(C, 1));
    at::parallel_for(0, B * S, grain, [&](int64_t begin, int64_t end) {
      for (int64_t bs = begin; bs < end; ++bs) {
        const int64_t j = ids[bs];
        scalar_t* row = dst + bs * C;
        if (j < 0) {
          for (int64_t c = 0; c < C; ++c) row[c] = scalar_t(0);
        } else {
          std::memcpy(row, src + ((bs / S) * N + j) * C, sizeof(scalar_t) * C);
        }
      }
    });
  });
  return out;
}

at::Tensor gather_points_backward_cpu(const at::Tensor& grad_in, const at::Tensor& idx_in,
                                      int64_t num_points) {
  check_gather_points_backward_args(grad_in, idx_in, num_points);
  const at::Tensor grad = grad_in.contiguous(), idx = idx_in.contiguous();
  const int64_t B = grad.size(0), S = grad.size(1), C = grad.size(2), N = num_points;
  check_index_range(idx.data_ptr<int64_t>(), B * S, N);
  at::Tensor acc = at::zeros({B, N, C}, grad.options().dtype(at::toOpMathType(grad.scalar_type())));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(),
                                  "gather_points_backward_cpu", [&] {
    using T = acc_type<scalar_t>;
    const scalar_t* g = grad.data_ptr<scalar_t>();
    const int64_t* ids = idx.data_ptr<int64_t>();
    T* dst = acc.data_ptr<T>();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        for (int64_t s = 0; s < S; ++s) {
          const int64_t j = ids[b * S + s];
          if (j < 0) continue;
          T* row = dst + (b * N + j) * C;
          const scalar_t* src = g + (b * S + s) * C;
          for (int64_t c = 0; c < C; ++c) row[c] += static_cast<T>(src[c]);
        }
      }
    });
  });
  return acc.to(grad.scalar_type());
}

TORCH_LIBRARY_IMPL(recon_fast, CPU, m) {
  m.impl("gather_points", &gather_points_cpu);
  m.impl("gather_points_backward", &gather_points_backward_cpu);
}

}  // namespace recon_fast
