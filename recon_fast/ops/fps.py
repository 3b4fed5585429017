"""Farthest point sampling (torch.ops.recon_fast.fps)."""

from __future__ import annotations

import torch

from recon_fast.ops._validation import (check_count, check_points, data_checks_enabled,
                                        lengths_or_full)

POINTNET2_MIN_NORM_SQ = 1e-3
"""pointnet2_ops never picks points with squared norm <= 1e-3 (after the start point)."""


@torch.library.register_fake("recon_fast::fps")
def _fps_fake(xyz, lengths, m, start_idx, min_norm_sq):
    return xyz.new_empty((xyz.shape[0], m), dtype=torch.int64)


def fps(xyz: torch.Tensor, m: int, lengths: torch.Tensor | None = None, *,
        random_start: bool = False, start_idx: torch.Tensor | None = None,
        min_norm_sq: float | None = None) -> torch.Tensor:
    """Farthest point sampling: indices of `m` points of each cloud that are spread out.

    Args:
        xyz: (B, N, D) points of any dimension D >= 1 (D = 3 has the fastest kernels), any
            float dtype; may be non-contiguous.
        m: number of samples, 0 <= m <= N.
        lengths: optional (B,) int, the number of valid points of each padded cloud.
        random_start: start from a uniformly random valid point (pytorch3d's option) instead
            of index 0 (pointnet2_ops semantics).
        start_idx: optional (B,) explicit first sample of each cloud (overrides random_start).
        min_norm_sq: if set, points with squared norm <= this value are never sampled
            (pointnet2_ops uses 1e-3, see ``POINTNET2_MIN_NORM_SQ``); the norm is over all D
            coordinates.

    Returns:
        (B, m) int64 indices into dimension 1 of `xyz`. Each next sample maximises the squared
        distance to the samples chosen so far; ties go to the lowest index. Slots at or beyond
        ``lengths[b]`` are -1.
    """
    check_points(xyz, "xyz", any_dim=True)
    B, N = xyz.shape[0], xyz.shape[1]
    m = check_count(m, "m", 0, N, f"number of samples; xyz has N = {N} points")
    lengths = lengths_or_full(lengths, "lengths", xyz, "xyz")
    if start_idx is None:
        if random_start:
            start_idx = (torch.rand(B, device=xyz.device) * lengths).long()
            start_idx = torch.minimum(start_idx, (lengths - 1).clamp_min(0))
        else:
            start_idx = torch.zeros(B, dtype=torch.int64, device=xyz.device)
    else:
        start_idx = lengths_or_full(start_idx, "start_idx", xyz, "xyz")
        if data_checks_enabled() and B > 0 and bool(((start_idx >= lengths) & (lengths > 0)).any()):
            raise ValueError(f"start_idx must be smaller than lengths for every non-empty cloud, "
                             f"got start_idx {start_idx.tolist()} and lengths {lengths.tolist()}")
    threshold = -1.0 if min_norm_sq is None else float(min_norm_sq)
    return torch.ops.recon_fast.fps(xyz, lengths, m, start_idx, threshold)
