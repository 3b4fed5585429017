// Chamfer nearest neighbours on the CPU: argument checks, the call into the kernel compiled for
// this CPU's instruction set (chamfer_cpu_simd.h), and the backward.
#include "chamfer/chamfer.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <limits>
#include <type_traits>
#include <vector>

#include "common/checks.h"
#include "common/cpu_utils.h"
#include "common/kdtree.h"
#include "common/neighbor_grad.h"

#define RECON_FAST_SIMD_BODY "chamfer/chamfer_cpu_simd.h"
#include "common/cpu_multiversion.h"

namespace recon_fast {

void check_chamfer_args(const at::Tensor& x, const at::Tensor& y, const at::Tensor& x_lengths,
                        const at::Tensor& y_lengths, int64_t norm) {
  check_points(x, "x");
  check_points(y, "y");
  check_same_device(x, "x", y, "y");
  check_same_dtype(x, "x", y, "y");
  check_batch(x, "x", y, "y");
  check_lengths(x_lengths, "x_lengths", x, "x");
  check_lengths(y_lengths, "y_lengths", y, "y");
  check_norm(norm);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> chamfer_cpu(
    const at::Tensor& x_in, const at::Tensor& y_in, const at::Tensor& x_lengths,
    const at::Tensor& y_lengths, int64_t norm) {
  check_chamfer_args(x_in, y_in, x_lengths, y_lengths, norm);
  const at::Tensor x = x_in.contiguous(), y = y_in.contiguous();
  const int64_t B = x.size(0), N = x.size(1), M = y.size(1);
  const std::vector<int64_t> xl = read_lengths(x_lengths, N, "x_lengths");
  const std::vector<int64_t> yl = read_lengths(y_lengths, M, "y_lengths");
  at::Tensor dxy = at::empty({B, N}, x.options()), dyx = at::empty({B, M}, x.options());
  at::Tensor ixy = at::empty({B, N}, x.options().dtype(at::kLong));
  at::Tensor iyx = at::empty({B, M}, x.options().dtype(at::kLong));
  if (B == 0) return {dxy, dyx, ixy, iyx};
  RECON_FAST_CPU_DISPATCH(chamfer_cpu_kernel, x, y, xl, yl, norm, dxy, dyx, ixy, iyx);
  return {dxy, dyx, ixy, iyx};
}

void check_chamfer_backward_args(const at::Tensor& grad_dist_xy, const at::Tensor& grad_dist_yx,
                                 const at::Tensor& x, const at::Tensor& y,
                                 const at::Tensor& idx_xy, const at::Tensor& idx_yx,
                                 int64_t norm) {
  check_points(x, "x");
  check_points(y, "y");
  check_same_dtype(x, "x", y, "y");
  check_same_device(x, "x", y, "y");
  check_batch(x, "x", y, "y");
  check_index(idx_xy, "idx_xy", x, "x");
  check_index(idx_yx, "idx_yx", y, "y");
  check_same_dtype(grad_dist_xy, "grad_dist_xy", x, "x");
  check_same_dtype(grad_dist_yx, "grad_dist_yx", x, "x");
  check_same_device(grad_dist_xy, "grad_dist_xy", x, "x");
  check_same_device(grad_dist_yx, "grad_dist_yx", x, "x");
  check_norm(norm);
  TORCH_CHECK_VALUE(idx_xy.dim() == 2 && idx_xy.size(1) == x.size(1) &&
                        grad_dist_xy.sizes() == idx_xy.sizes(),
                    "idx_xy and grad_dist_xy must have shape (B, N) = ", "(", x.size(0), ", ",
                    x.size(1), "), got ", shape_str(idx_xy), " and ", shape_str(grad_dist_xy));
  TORCH_CHECK_VALUE(idx_yx.dim() == 2 && idx_yx.size(1) == y.size(1) &&
                        grad_dist_yx.sizes() == idx_yx.sizes(),
                    "idx_yx and grad_dist_yx must have shape (B, M) = ", "(", y.size(0), ", ",
                    y.size(1), "), got ", shape_str(idx_yx), " and ", shape_str(grad_dist_yx));
}

std::tuple<at::Tensor, at::Tensor> chamfer_backward_cpu(
    const at::Tensor& gxy_in, const at::Tensor& gyx_in, const at::Tensor& x_in,
    const at::Tensor& y_in, const at::Tensor& ixy_in, const at::Tensor& iyx_in, int64_t norm) {
  check_chamfer_backward_args(gxy_in, gyx_in, x_in, y_in, ixy_in, iyx_in, norm);
  const at::Tensor gxy = gxy_in.contiguous(), gyx = gyx_in.contiguous(), x = x_in.contiguous(),
                   y = y_in.contiguous(), ixy = ixy_in.contiguous(), iyx = iyx_in.contiguous();
  const int64_t B = x.size(0), N = x.size(1), M = y.size(1);
  const auto acc_options = x.options().dtype(at::toOpMathType(x.scalar_type()));
  at::Tensor grad_x = at::zeros({B, N, 3}, acc_options);
  at::Tensor grad_y = at::zeros({B, M, 3}, acc_options);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                  "chamfer_backward_cpu", [&] {
    using T = acc_type<scalar_t>;
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* yp = y.data_ptr<scalar_t>();
    T* gx = grad_x.data_ptr<T>();
    T* gy = grad_y.data_ptr<T>();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        accumulate_neighbor_grads<scalar_t>(xp + b * N * 3, yp + b * M * 3,
                                            ixy.data_ptr<int64_t>() + b * N,
                                            gxy.data_ptr<scalar_t>() + b * N, N, 1, M,
                                            static_cast<int>(norm), gx + b * N * 3, gy + b * M * 3);
        accumulate_neighbor_grads<scalar_t>(yp + b * M * 3, xp + b * N * 3,
                                            iyx.data_ptr<int64_t>() + b * M,
                                            gyx.data_ptr<scalar_t>() + b * M, M, 1, N,
                                            static_cast<int>(norm), gy + b * M * 3, gx + b * N * 3);
      }
    });
  });
  return {grad_x.to(x.scalar_type()), grad_y.to(x.scalar_type())};
}

TORCH_LIBRARY_IMPL(recon_fast, CPU, m) {
  m.impl("chamfer", &chamfer_cpu);
  m.impl("chamfer_backward", &chamfer_backward_cpu);
}

}  // namespace recon_fast
