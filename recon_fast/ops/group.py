"""ReCon's point grouping: farthest-point centres, their k nearest points, centred patches."""

from __future__ import annotations

from typing import NamedTuple

import torch

from recon_fast.ops._validation import check_count, check_points
from recon_fast.ops.fps import POINTNET2_MIN_NORM_SQ, fps
from recon_fast.ops.gather_points import gather_points
from recon_fast.ops.knn import knn


class Group(NamedTuple):
    """neighborhood (B, G, K, 3): each patch relative to its centre; center (B, G, 3)."""

    neighborhood: torch.Tensor
    center: torch.Tensor


def group(xyz: torch.Tensor, num_group: int, group_size: int, *,
          pointnet2_compat: bool = True) -> Group:
    """Split each cloud into `num_group` patches of `group_size` points, as ReCon's ``Group``.

    Centres are farthest point samples starting at index 0; each patch is the `group_size`
    nearest points of its centre (the centre included), minus the centre.

    Args:
        xyz: (B, N, 3) points.
        num_group: G, 1 <= G <= N.  group_size: K, 1 <= K <= N.
        pointnet2_compat: sample centres exactly as pointnet2_ops' furthest_point_sample, which
            the reference code uses: points with squared norm <= 1e-3 are never centres.

    Returns:
        Group(neighborhood (B, G, K, 3), center (B, G, 3)); differentiable w.r.t. `xyz`.
    """
    check_points(xyz, "xyz")
    N = xyz.shape[1]
    num_group = check_count(num_group, "num_group", 1, max(N, 1), f"xyz has N = {N} points")
    group_size = check_count(group_size, "group_size", 1, max(N, 1), f"xyz has N = {N} points")
    center_idx = fps(xyz, num_group, min_norm_sq=POINTNET2_MIN_NORM_SQ if pointnet2_compat else None)
    center = gather_points(xyz, center_idx)  # (B, G, 3)
    patch_idx = knn(center.detach(), xyz, group_size).idx  # (B, G, K)
    neighborhood = gather_points(xyz, patch_idx) - center.unsqueeze(2)  # (B, G, K, 3)
    return Group(neighborhood, center)
