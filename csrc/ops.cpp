// Operator schemas of the recon_fast library: torch.ops.recon_fast.<name>.
// Kernels register per device next to their sources (csrc/<op>/<op>_cpu.cpp, <op>_cuda.cu);
// autograd formulas and fake (meta) kernels are registered from Python (recon_fast/ops).
//
// Conventions shared by every op:
//   * points are (B, N, C) of float16/bfloat16/float32/float64 (C = 3 unless stated); halves are
//     accumulated in float32, float64 in float64; outputs keep the input dtype.
//   * indices are int64, -1 marks padding (a slot that has no point).
//   * lengths are int64 (B,) on the points' device: ragged clouds padded to N (pytorch3d style).
#include <torch/library.h>

TORCH_LIBRARY(recon_fast, m) {
  // Farthest point sampling. xyz (B, N, 3) -> idx (B, m). Starts at start_idx[b]; each next
  // point maximises the squared distance to the chosen set, ties to the lowest index. Points
  // with squared norm <= min_norm_sq are never chosen (pointnet2_ops skips |p|^2 <= 1e-3; pass a
  // negative value to consider every point). Slots beyond lengths[b] are -1.
  m.def("fps(Tensor xyz, Tensor lengths, int m, Tensor start_idx, float min_norm_sq) -> Tensor");

  // k nearest neighbours of each query among points, sorted by (distance, index).
  // query (B, M, 3), points (B, N, 3) -> dist (B, M, k) [squared L2 if norm == 2, L1 if norm == 1],
  // idx (B, M, k). Missing neighbours (k > point_lengths[b]) and padded queries get idx -1, dist 0.
  m.def("knn(Tensor query, Tensor points, Tensor query_lengths, Tensor point_lengths, int k, "
        "int norm) -> (Tensor, Tensor)");
  m.def("knn_backward(Tensor grad_dist, Tensor query, Tensor points, Tensor idx, int norm) -> "
        "(Tensor, Tensor)");

  // out[b, s, :] = points[b, idx[b, s], :], zeros where idx is -1. points (B, N, C), idx (B, S).
  m.def("gather_points(Tensor points, Tensor idx) -> Tensor");
  m.def("gather_points_backward(Tensor grad_out, Tensor idx, int num_points) -> Tensor");

  // Chamfer nearest neighbours both ways. x (B, N, 3), y (B, M, 3) ->
  // dist_xy (B, N), dist_yx (B, M), idx_xy (B, N), idx_yx (B, M); padded slots: dist 0, idx -1.
  m.def("chamfer(Tensor x, Tensor y, Tensor x_lengths, Tensor y_lengths, int norm) -> "
        "(Tensor, Tensor, Tensor, Tensor)");
  m.def("chamfer_backward(Tensor grad_dist_xy, Tensor grad_dist_yx, Tensor x, Tensor y, "
        "Tensor idx_xy, Tensor idx_yx, int norm) -> (Tensor, Tensor)");

  // Fused Chamfer loss of many small full clouds (1..256 points each, float32/float64):
  // loss per pair = mean_i d_xy + mean_j d_yx with d the squared distance (norm 2), or half the
  // same of sqrt(max(d, tiny)) (norm 1, ChamferDistanceL1); reduction 0 none (B,), 1 sum, 2 mean.
  // Returns (loss, idx_xy (B, N), idx_yx (B, M)). CUDA kernel: csrc/chamfer/chamfer_loss_cuda.cu.
  m.def("chamfer_loss(Tensor x, Tensor y, int norm, int reduction) -> (Tensor, Tensor, Tensor)");
  m.def("chamfer_loss_backward(Tensor grad_loss, Tensor x, Tensor y, Tensor idx_xy, "
        "Tensor idx_yx, int norm, int reduction) -> (Tensor, Tensor)");

  // Ball query: the first k points (in index order) with squared distance < radius^2 to each
  // query. query (B, M, D), points (B, N, D), any D >= 1 -> dist (B, M, k) squared L2,
  // idx (B, M, k); unused slots and padded queries get idx -1, dist 0 (pytorch3d's padding).
  m.def("ball_query(Tensor query, Tensor points, Tensor query_lengths, Tensor point_lengths, "
        "int k, float radius) -> (Tensor, Tensor)");
  m.def("ball_query_backward(Tensor grad_dist, Tensor query, Tensor points, Tensor idx) -> "
        "(Tensor, Tensor)");
}
