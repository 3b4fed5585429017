// Chamfer nearest neighbours, both directions.
//
//   x (B, N, 3), y (B, M, 3) of the same floating dtype and device
//   x_lengths (B,) int64 <= N, y_lengths (B,) int64 <= M
//   norm  2: squared Euclidean distance, 1: L1 distance
// returns dist_xy (B, N): distance of x[b, i] to its nearest y; dist_yx (B, M) the other way;
// idx_xy (B, N), idx_yx (B, M) the nearest indices (ties to the lowest index). Padded points and
// points whose other cloud is empty get dist 0, idx -1.
//
// chamfer_backward(grad_dist_xy, grad_dist_yx, x, y, idx_xy, idx_yx, norm) -> (grad_x, grad_y).
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace recon_fast {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> chamfer_cpu(
    const at::Tensor& x, const at::Tensor& y, const at::Tensor& x_lengths,
    const at::Tensor& y_lengths, int64_t norm);

std::tuple<at::Tensor, at::Tensor> chamfer_backward_cpu(
    const at::Tensor& grad_dist_xy, const at::Tensor& grad_dist_yx, const at::Tensor& x,
    const at::Tensor& y, const at::Tensor& idx_xy, const at::Tensor& idx_yx, int64_t norm);

void check_chamfer_args(const at::Tensor& x, const at::Tensor& y, const at::Tensor& x_lengths,
                        const at::Tensor& y_lengths, int64_t norm);

void check_chamfer_backward_args(const at::Tensor& grad_dist_xy, const at::Tensor& grad_dist_yx,
                                 const at::Tensor& x, const at::Tensor& y,
                                 const at::Tensor& idx_xy, const at::Tensor& idx_yx, int64_t norm);

}  // namespace recon_fast
