"""Drop-in replacement for ``pointnet2_ops.pointnet2_utils`` (erikwijmans/Pointnet2_PyTorch).

Swap ``from pointnet2_ops import pointnet2_utils`` for
``from recon_fast.compat.pointnet2_ops import pointnet2_utils``. The namespace holds exactly
the five functions below, with the original shapes, index dtype (int32) and autograd behaviour:

- ``furthest_point_sample(xyz, npoint)`` -> (B, npoint) int32, starting at index 0 and never
  picking a point with squared norm <= 1e-3 after the start (the original CUDA kernel skips
  them; ReCon and Point-MAE sample their group centres with it).
- ``gather_operation(features, idx)`` -> (B, C, npoint), differentiable w.r.t. ``features``.
- ``grouping_operation(features, idx)`` -> (B, C, npoint, nsample), differentiable likewise.
- ``three_nn(unknown, known)`` -> (Euclidean distances, int32 indices) of the 3 nearest known
  points, neither differentiable.
- ``three_interpolate(features, idx, weight)`` -> (B, C, n), differentiable w.r.t. ``features``.

Differences from the original, all in the direction of accepting more:

- CPU and CUDA tensors; float16/bfloat16/float32/float64 (the original: float32 on CUDA only).
  Outputs keep the input's float dtype; halves accumulate in float32.
- Non-contiguous inputs are fine; indices may be int32 or int64.
- Bad arguments raise ``ValueError`` naming the argument: ``npoint`` above N (the original then
  repeats indices), indices outside [-1, N) (the original reads out of bounds), empty ``known``.
  Index -1 gathers a row of zeros.
- Exact distance ties go to the lowest index (the CUDA kernels break them by thread order).
- ``three_interpolate`` gives ``weight`` no gradient, as the original (whose backward returns
  zeros for it); ``weight.grad`` stays None rather than being filled with zeros.

Names the original module also has (``ball_query``, ``QueryAndGroup``, ``GroupAll``, the
``autograd.Function`` classes) are not provided, so code that needs them fails at the lookup.
"""

from __future__ import annotations

import types

import torch

from recon_fast.ops import POINTNET2_MIN_NORM_SQ, fps, gather_points, knn
from recon_fast.ops._validation import FLOAT_DTYPES, check_count, check_points, describe

_INDEX_DTYPES = (torch.int32, torch.int64)


def _check_features(features, name: str = "features") -> None:
    """(B, C, N) float features; pointnet2 keeps channels first."""
    if not isinstance(features, torch.Tensor) or features.dim() != 3:
        seen = describe(features) if isinstance(features, torch.Tensor) else type(features).__name__
        raise ValueError(f"{name} must have shape (B, C, N), got {seen}")
    if features.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be float16, bfloat16, float32 or float64, "
                         f"got {describe(features)}")


def _check_index(idx, name: str, rank: int, batch: int, device: torch.device, what: str) -> None:
    if not isinstance(idx, torch.Tensor) or idx.dtype not in _INDEX_DTYPES:
        seen = describe(idx) if isinstance(idx, torch.Tensor) else type(idx).__name__
        raise ValueError(f"{name} must be an int32 or int64 tensor, got {seen}")
    if idx.dim() != rank or idx.shape[0] != batch:
        raise ValueError(f"{name} must have shape {what} with B = {batch}, got {describe(idx)}")
    if idx.device != device:
        raise ValueError(f"{name} is on {idx.device} but features is on {device}")


def furthest_point_sample(xyz: torch.Tensor, npoint: int) -> torch.Tensor:
    """Farthest point sampling with pointnet2_ops' semantics.

    Args:
        xyz: (B, N, 3) points.
        npoint: number of samples, 0 <= npoint <= N.

    Returns:
        (B, npoint) int32 indices. The first is 0; each next one maximises the squared distance
        to the samples so far among points with squared norm > 1e-3 (ties to the lowest index).
        Once all of those are at distance 0, the lowest-index one repeats (index 0 if there are
        none), as in the original. Not differentiable.
    """
    check_points(xyz, "xyz")
    N = xyz.shape[1]
    npoint = check_count(npoint, "npoint", 0, N, f"number of samples; xyz has N = {N} points")
    idx = fps(xyz, npoint, min_norm_sq=POINTNET2_MIN_NORM_SQ)
    return idx.to(torch.int32)


def gather_operation(features: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``out[b, c, j] = features[b, c, idx[b, j]]``.

    Args:
        features: (B, C, N) float features.
        idx: (B, npoint) int32/int64 indices into N (-1 gives zeros).

    Returns:
        (B, C, npoint) contiguous, in the dtype of ``features``; differentiable w.r.t. it.
    """
    _check_features(features)
    _check_index(idx, "idx", 2, features.shape[0], features.device, "(B, npoint)")
    rows = gather_points(features.transpose(1, 2), idx)  # (B, npoint, C)
    return rows.transpose(1, 2).contiguous()  # (B, C, npoint)


def grouping_operation(features: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``out[b, c, j, s] = features[b, c, idx[b, j, s]]``.

    Args:
        features: (B, C, N) float features.
        idx: (B, npoint, nsample) int32/int64 indices into N (-1 gives zeros).

    Returns:
        (B, C, npoint, nsample) contiguous; differentiable w.r.t. ``features``.
    """
    _check_features(features)
    _check_index(idx, "idx", 3, features.shape[0], features.device, "(B, npoint, nsample)")
    rows = gather_points(features.transpose(1, 2), idx)  # (B, npoint, nsample, C)
    return rows.permute(0, 3, 1, 2).contiguous()  # (B, C, npoint, nsample)


def three_nn(unknown: torch.Tensor, known: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The three nearest ``known`` points of every ``unknown`` point.

    Args:
        unknown: (B, n, 3) query points; known: (B, m, 3) candidates, m >= 1.

    Returns:
        dist: (B, n, 3) Euclidean (not squared) distances, ascending, dtype of the inputs.
        idx: (B, n, 3) int32 indices into ``known``.
        With m < 3 the missing neighbours get index 0 and distance inf, as in the original, so
        inverse-distance weights give them weight 0. Neither output is differentiable.
    """
    check_points(unknown, "unknown")
    check_points(known, "known")
    m = known.shape[1]
    if m == 0:
        raise ValueError(f"known is empty ({describe(known)}): there are no neighbours to find")
    with torch.no_grad():
        found = knn(unknown, known, min(3, m))  # (B, n, k) squared distances
        dist, idx = found.dists.sqrt(), found.idx
        if m < 3:
            dist = torch.cat([dist, dist.new_full((*dist.shape[:2], 3 - m), float("inf"))], 2)
            idx = torch.cat([idx, idx.new_zeros((*idx.shape[:2], 3 - m))], 2)
    return dist, idx.to(torch.int32)


def three_interpolate(features: torch.Tensor, idx: torch.Tensor,
                      weight: torch.Tensor) -> torch.Tensor:
    """Weighted sum of three features per target point.

    ``out[b, :, j] = sum_k features[b, :, idx[b, j, k]] * weight[b, j, k]``.

    Args:
        features: (B, C, m) source features.
        idx: (B, n, 3) int32/int64 indices into m (from :func:`three_nn`).
        weight: (B, n, 3) float weights.

    Returns:
        (B, C, n) in the dtype of ``features`` (halves accumulate in float32). Differentiable
        w.r.t. ``features`` only: ``weight`` is treated as a constant, as in pointnet2_ops.
    """
    _check_features(features)
    B = features.shape[0]
    _check_index(idx, "idx", 3, B, features.device, "(B, n, 3)")
    if idx.shape[2] != 3:
        raise ValueError(f"idx must have shape (B, n, 3), got {describe(idx)}")
    if (not isinstance(weight, torch.Tensor) or weight.shape != idx.shape
            or not weight.dtype.is_floating_point):
        seen = describe(weight) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"weight must be a float tensor shaped like idx {tuple(idx.shape)}, "
                         f"got {seen}")
    if weight.device != features.device:
        raise ValueError(f"weight is on {weight.device} but features is on {features.device}")
    acc = torch.float64 if features.dtype == torch.float64 else torch.float32
    neighbours = gather_points(features.transpose(1, 2), idx)  # (B, n, 3, C)
    mixed = (neighbours.to(acc) * weight.detach().to(acc).unsqueeze(3)).sum(2)  # (B, n, C)
    return mixed.to(features.dtype).transpose(1, 2).contiguous()  # (B, C, n)


pointnet2_utils = types.ModuleType(
    "pointnet2_utils", "pointnet2_ops.pointnet2_utils replacement backed by recon_fast.ops.")
for _function in (furthest_point_sample, gather_operation, grouping_operation, three_nn,
                  three_interpolate):
    setattr(pointnet2_utils, _function.__name__, _function)
pointnet2_utils.__all__ = ["furthest_point_sample", "gather_operation", "grouping_operation",
                           "three_nn", "three_interpolate"]
del _function

__all__ = ["pointnet2_utils", *pointnet2_utils.__all__]
