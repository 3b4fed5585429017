// Points of dimension D < 3 as xyz for the 3-D kernels.
//
// A zero coordinate appended to every point adds +0 to each distance and norm, which leaves every
// sum bit for bit unchanged ((0 + a) + b = a + b, and x + 0 = x), so the 3-D kernels (Morton scan,
// kd-trees, the CUDA warp lists) give exactly the D-dimensional answer: kNN and FPS over D = 1, 2
// use them after this padding, at the cost of one copy of the clouds.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/constant_pad_nd.h>

namespace recon_fast {

// (B, N, D) -> (B, N, 3) contiguous with zeros in the added coordinates; D >= 3 is returned as is.
inline at::Tensor pad_points_to_3d(const at::Tensor& points) {
  const int64_t D = points.size(2);
  if (D >= 3) return points;
  return at::constant_pad_nd(points, {0, 3 - D}, 0).contiguous();
}

}  // namespace recon_fast
