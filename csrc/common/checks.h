// Input validation shared by every op. Each failure is a ValueError in Python whose message
// names the argument and the shape/dtype/device seen, so a user can tell what to fix without
// reading C++.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <string>

namespace recon_fast {

inline std::string shape_str(const at::Tensor& t) {
  std::string s = "(";
  for (int64_t d = 0; d < t.dim(); ++d) {
    s += std::to_string(t.size(d));
    if (d + 1 < t.dim()) s += ", ";
  }
  if (t.dim() == 1) s += ",";
  return s + ")";
}

// A (B, N, 3)-style point cloud of a floating dtype; channels <= 0: any last dimension (B, N, D).
inline void check_points(const at::Tensor& t, const char* name, int64_t channels = 3) {
  TORCH_CHECK_VALUE(t.dim() == 3, name, " must have shape (B, N, ",
                    channels > 0 ? std::to_string(channels) : std::string("D"), "), got ",
                    shape_str(t));
  if (channels > 0) {
    TORCH_CHECK_VALUE(t.size(2) == channels, name, " must have shape (B, N, ", channels,
                      ") with last dimension ", channels, ", got ", shape_str(t));
  }
  TORCH_CHECK_VALUE(at::isFloatingType(t.scalar_type()), name,
                    " must be float16, bfloat16, float32 or float64, got ", t.scalar_type());
}

// Two point clouds of the same dimension D >= 1 (any D): (B, M, D) and (B, N, D).
inline void check_same_point_dim(const at::Tensor& a, const char* a_name, const at::Tensor& b,
                                 const char* b_name) {
  TORCH_CHECK_VALUE(a.size(2) >= 1, a_name, " must have points of dimension D >= 1, got shape ",
                    shape_str(a));
  TORCH_CHECK_VALUE(a.size(2) == b.size(2), a_name, " and ", b_name,
                    " must have the same point dimension D, got ", a_name, " ", shape_str(a),
                    " and ", b_name, " ", shape_str(b));
}

inline void check_same_device(const at::Tensor& a, const char* a_name, const at::Tensor& b,
                              const char* b_name) {
  TORCH_CHECK_VALUE(a.device() == b.device(), a_name, " is on ", a.device(), " but ", b_name,
                    " is on ", b.device(), "; move both to the same device");
}

inline void check_same_dtype(const at::Tensor& a, const char* a_name, const at::Tensor& b,
                             const char* b_name) {
  TORCH_CHECK_VALUE(a.scalar_type() == b.scalar_type(), a_name, " has dtype ", a.scalar_type(),
                    " but ", b_name, " has dtype ", b.scalar_type(), "; cast one of them");
}

inline void check_batch(const at::Tensor& a, const char* a_name, const at::Tensor& b,
                        const char* b_name) {
  TORCH_CHECK_VALUE(a.size(0) == b.size(0), a_name, " has batch size ", a.size(0), " but ",
                    b_name, " has batch size ", b.size(0), " (shapes ", shape_str(a), " and ",
                    shape_str(b), ")");
}

// A per-cloud length vector: int64 of shape (B,) on the points' device.
inline void check_lengths(const at::Tensor& lengths, const char* name, const at::Tensor& points,
                          const char* points_name) {
  TORCH_CHECK_VALUE(lengths.dim() == 1 && lengths.size(0) == points.size(0), name,
                    " must have shape (B,) = (", points.size(0), ",) to match ", points_name,
                    ", got ", shape_str(lengths));
  TORCH_CHECK_VALUE(lengths.scalar_type() == at::kLong, name, " must be int64, got ",
                    lengths.scalar_type());
  check_same_device(lengths, name, points, points_name);
}

// An index tensor of int64 whose first dimension is the batch.
inline void check_index(const at::Tensor& idx, const char* name, const at::Tensor& points,
                        const char* points_name) {
  TORCH_CHECK_VALUE(idx.scalar_type() == at::kLong, name, " must be int64, got ",
                    idx.scalar_type());
  TORCH_CHECK_VALUE(idx.dim() >= 1, name, " must have a batch dimension, got ", shape_str(idx));
  check_batch(idx, name, points, points_name);
  check_same_device(idx, name, points, points_name);
}

inline void check_norm(int64_t norm) {
  TORCH_CHECK_VALUE(norm == 1 || norm == 2, "norm must be 1 (L1) or 2 (squared L2), got ", norm);
}

}  // namespace recon_fast
