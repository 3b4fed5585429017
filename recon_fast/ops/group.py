"""ReCon's point grouping: farthest-point centres, their k nearest points, centred patches."""

from __future__ import annotations

from typing import NamedTuple

import torch

from recon_fast.errors import InputError
from recon_fast.ops._validation import check_count, check_points, describe
from recon_fast.ops.fps import POINTNET2_MIN_NORM_SQ


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
    # Validated once here (one host read with the data checks on); the ops below get inputs
    # that are valid by construction, so they run without their own checks.
    check_points(xyz, "xyz")
    B, N = xyz.shape[0], xyz.shape[1]
    if N == 0:
        raise InputError(f"xyz holds no points ({describe(xyz)}): there is nothing to group")
    num_group = check_count(num_group, "num_group", 1, max(N, 1), f"xyz has N = {N} points")
    group_size = check_count(group_size, "group_size", 1, max(N, 1), f"xyz has N = {N} points")
    full = torch.full((B,), N, dtype=torch.int64, device=xyz.device)
    start = torch.zeros(B, dtype=torch.int64, device=xyz.device)
    threshold = POINTNET2_MIN_NORM_SQ if pointnet2_compat else -1.0
    center_idx = torch.ops.recon_fast.fps(xyz, full, num_group, start, threshold)  # (B, G)
    center = torch.ops.recon_fast.gather_points(xyz, center_idx)  # (B, G, 3)
    queries = torch.full((B,), num_group, dtype=torch.int64, device=xyz.device)
    _, patch_idx = torch.ops.recon_fast.knn(center.detach(), xyz, queries, full, group_size, 2)
    patches = torch.ops.recon_fast.gather_points(xyz, patch_idx.reshape(B, num_group * group_size))
    neighborhood = patches.reshape(B, num_group, group_size, 3) - center.unsqueeze(2)  # (B, G, K, 3)
    return Group(neighborhood, center)
