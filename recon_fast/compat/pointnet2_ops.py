"""Drop-in replacement for ``pointnet2_ops`` (erikwijmans/Pointnet2_PyTorch).

Swap ``from pointnet2_ops import pointnet2_utils`` for
``from recon_fast.compat.pointnet2_ops import pointnet2_utils`` (and ``pointnet2_modules``
likewise), or call :func:`recon_fast.compat.install` to make ``import pointnet2_ops`` itself
resolve here. ``pointnet2_utils`` holds every public name of the original module, with the
original signatures, shapes, index dtype (int32) and autograd behaviour:

- ``furthest_point_sample(xyz, npoint)`` -> (B, npoint) int32, starting at index 0 and never
  picking a point with squared norm <= 1e-3 after the start (the original CUDA kernel skips
  them; ReCon and Point-MAE sample their group centres with it).
- ``gather_operation(features, idx)`` -> (B, C, npoint), differentiable w.r.t. ``features``.
- ``grouping_operation(features, idx)`` -> (B, C, npoint, nsample), differentiable likewise.
- ``ball_query(radius, nsample, xyz, new_xyz)`` -> (B, npoint, nsample) int32: the first
  ``nsample`` points (in index order) with squared distance < radius^2, unused slots repeating
  the first one found, index 0 throughout for an empty ball. Not differentiable.
- ``three_nn(unknown, known)`` -> (Euclidean distances, int32 indices) of the 3 nearest known
  points, neither differentiable.
- ``three_interpolate(features, idx, weight)`` -> (B, C, n), differentiable w.r.t. ``features``;
  ``weight`` gets a zero gradient, as the original's backward returns ``zeros_like(weight)``.
- the ``autograd.Function`` classes behind them (``FurthestPointSampling``,
  ``GatherOperation``, ``GroupingOperation``, ``BallQuery``, ``ThreeNN``, ``ThreeInterpolate``;
  ``X.apply`` takes the function's arguments) and the grouping modules ``QueryAndGroup(radius,
  nsample, use_xyz=True)`` and ``GroupAll(use_xyz=True)``.

``pointnet2_modules`` (:mod:`recon_fast.compat.pointnet2_modules`) holds ``build_shared_mlp``,
``PointnetSAModuleMSG``, ``PointnetSAModule`` and ``PointnetFPModule`` with the original
parameter names, so the original checkpoints load.

Differences from the original, all in the direction of accepting more:

- CPU and CUDA tensors; float16/bfloat16/float32/float64 (the original: float32 on CUDA only).
  Outputs keep the input's float dtype; halves accumulate in float32.
- Non-contiguous inputs are fine; indices may be int32 or int64.
- Bad arguments raise ``ValueError`` naming the argument: ``npoint`` above N (the original then
  repeats indices), indices outside [-1, N) (the original reads out of bounds), empty ``known``,
  a negative radius. Index -1 gathers a row of zeros.
- Exact distance ties go to the lowest index (the CUDA kernels break them by thread order).
- Distances are computed without fused multiply-adds, so a point exactly on a ball's boundary
  (up to the last bit) may be in or out where the original's contracted arithmetic decides
  the other way.
- ``QueryAndGroup`` without features and ``use_xyz=False`` raises ``ValueError`` (the original
  asserts).
"""

from __future__ import annotations

import types

import torch
from torch import nn

from recon_fast.ops import POINTNET2_MIN_NORM_SQ, fps, gather_points, knn
from recon_fast.ops import ball_query as ops_ball_query
from recon_fast.ops.ball_query import check_radius, pad_with_first
from recon_fast.ops.validate import (FLOAT_DTYPES, accumulation_dtype, check_count, check_points,
                                     describe)

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


def _furthest_point_sample(xyz: torch.Tensor, npoint: int) -> torch.Tensor:
    """The forward of :func:`furthest_point_sample`, arguments checked."""
    check_points(xyz, "xyz")
    N = xyz.shape[1]
    npoint = check_count(npoint, "npoint", 0, N, f"number of samples; xyz has N = {N} points")
    idx = fps(xyz, npoint, min_norm_sq=POINTNET2_MIN_NORM_SQ)
    return idx.to(torch.int32)


def _gather_operation(features: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """The forward of :func:`gather_operation`, arguments checked."""
    _check_features(features)
    _check_index(idx, "idx", 2, features.shape[0], features.device, "(B, npoint)")
    rows = gather_points(features.transpose(1, 2), idx)  # (B, npoint, C)
    return rows.transpose(1, 2).contiguous()  # (B, C, npoint)


def _grouping_operation(features: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """The forward of :func:`grouping_operation`, arguments checked."""
    _check_features(features)
    _check_index(idx, "idx", 3, features.shape[0], features.device, "(B, npoint, nsample)")
    rows = gather_points(features.transpose(1, 2), idx)  # (B, npoint, nsample, C)
    return rows.permute(0, 3, 1, 2).contiguous()  # (B, C, npoint, nsample)


def _three_nn(unknown: torch.Tensor, known: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward of :func:`three_nn`, arguments checked."""
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


def _interpolate_three(features: torch.Tensor, idx: torch.Tensor,
                       weight: torch.Tensor) -> torch.Tensor:
    """The forward of :func:`three_interpolate`, arguments checked."""
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
    acc = accumulation_dtype(features.dtype)
    neighbours = gather_points(features.transpose(1, 2), idx)  # (B, n, 3, C)
    mixed = (neighbours.to(acc) * weight.to(acc).unsqueeze(3)).sum(2)  # (B, n, C)
    return mixed.to(features.dtype).transpose(1, 2).contiguous()  # (B, C, n)


# --------------------------------------------------------------------------------------------
# autograd.Function classes under the original names; the functions below call them
# --------------------------------------------------------------------------------------------

def _scatter_rows(rows: torch.Tensor, idx: torch.Tensor, num_points: int) -> torch.Tensor:
    """rows (B, S, C), idx (B, S) -> (B, num_points, C): rows added into their indices (-1 is
    dropped), accumulated in float32 for half types."""
    return torch.ops.recon_fast.gather_points_backward(rows.contiguous(), idx.long().contiguous(),
                                                       num_points)


class FurthestPointSampling(torch.autograd.Function):
    """``FurthestPointSampling.apply(xyz, npoint)``: see :func:`furthest_point_sample`."""

    @staticmethod
    def forward(ctx, xyz, npoint):
        out = _furthest_point_sample(xyz, npoint)
        ctx.mark_non_differentiable(out)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        return None, None


class _IndexedFeatures(torch.autograd.Function):
    """Features picked by index (gather: idx (B, npoint); grouping: idx (B, npoint, nsample)):
    the backward scatters the gradient rows back onto the N points, the same for both."""

    @staticmethod
    def backward(ctx, grad_out):
        (idx,) = ctx.saved_tensors
        B, C = grad_out.shape[:2]
        rows = grad_out.reshape(B, C, -1).transpose(1, 2)  # (B, picks, C)
        grad = _scatter_rows(rows, idx.reshape(B, -1), ctx.num_points)  # (B, N, C)
        return grad.transpose(1, 2), None


class GatherOperation(_IndexedFeatures):
    """``GatherOperation.apply(features, idx)``: see :func:`gather_operation`."""

    @staticmethod
    def forward(ctx, features, idx):
        out = _gather_operation(features, idx)  # checks the arguments first
        ctx.save_for_backward(idx)
        ctx.num_points = features.shape[2]
        return out


class GroupingOperation(_IndexedFeatures):
    """``GroupingOperation.apply(features, idx)``: see :func:`grouping_operation`."""

    @staticmethod
    def forward(ctx, features, idx):
        out = _grouping_operation(features, idx)  # checks the arguments first
        ctx.save_for_backward(idx)
        ctx.num_points = features.shape[2]
        return out


class ThreeNN(torch.autograd.Function):
    """``ThreeNN.apply(unknown, known)``: see :func:`three_nn`."""

    @staticmethod
    def forward(ctx, unknown, known):
        dist, idx = _three_nn(unknown, known)
        ctx.mark_non_differentiable(dist, idx)
        return dist, idx

    @staticmethod
    def backward(ctx, grad_dist, grad_idx):
        return None, None


class ThreeInterpolate(torch.autograd.Function):
    """``ThreeInterpolate.apply(features, idx, weight)``: see :func:`three_interpolate`."""

    @staticmethod
    def forward(ctx, features, idx, weight):
        out = _interpolate_three(features, idx, weight)  # checks the arguments first
        ctx.save_for_backward(idx, weight)
        ctx.num_points = features.shape[2]
        ctx.features_dtype = features.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):
        idx, weight = ctx.saved_tensors
        B, C, n = grad_out.shape
        acc = accumulation_dtype(grad_out.dtype)
        g = grad_out.transpose(1, 2).to(acc)  # (B, n, C)
        rows = g[:, :, None, :] * weight.to(acc)[..., None]  # (B, n, 3, C)
        grad = _scatter_rows(rows.reshape(B, n * 3, C), idx.reshape(B, n * 3), ctx.num_points)
        grad_features = grad.to(ctx.features_dtype).transpose(1, 2)  # (B, C, m)
        # The original's backward returns zeros for weight, so weight.grad becomes zeros.
        return grad_features, None, torch.zeros_like(weight)


class BallQuery(torch.autograd.Function):
    """``BallQuery.apply(radius, nsample, xyz, new_xyz)``: see :func:`ball_query`."""

    @staticmethod
    def forward(ctx, radius, nsample, xyz, new_xyz):
        out = _ball_query(radius, nsample, xyz, new_xyz)
        ctx.mark_non_differentiable(out)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        return None, None, None, None


# --------------------------------------------------------------------------------------------
# Public functions (the original binds them to Function.apply; these add docstrings)
# --------------------------------------------------------------------------------------------

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
    return FurthestPointSampling.apply(xyz, npoint)


def gather_operation(features: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``out[b, c, j] = features[b, c, idx[b, j]]``.

    Args:
        features: (B, C, N) float features.
        idx: (B, npoint) int32/int64 indices into N (-1 gives zeros).

    Returns:
        (B, C, npoint) contiguous, in the dtype of ``features``; differentiable w.r.t. it.
    """
    return GatherOperation.apply(features, idx)


def grouping_operation(features: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``out[b, c, j, s] = features[b, c, idx[b, j, s]]``.

    Args:
        features: (B, C, N) float features.
        idx: (B, npoint, nsample) int32/int64 indices into N (-1 gives zeros).

    Returns:
        (B, C, npoint, nsample) contiguous; differentiable w.r.t. ``features``.
    """
    return GroupingOperation.apply(features, idx)


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
    return ThreeNN.apply(unknown, known)


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
        w.r.t. ``features``; ``weight`` receives a zero gradient, as in pointnet2_ops.
    """
    return ThreeInterpolate.apply(features, idx, weight)


def _ball_query(radius: float, nsample: int, xyz: torch.Tensor,
                new_xyz: torch.Tensor) -> torch.Tensor:
    check_points(xyz, "xyz")
    check_points(new_xyz, "new_xyz")
    nsample = check_count(nsample, "nsample", 1, 2**31 - 1, "points kept per ball")
    with torch.no_grad():
        found = ops_ball_query(new_xyz, xyz, nsample, check_radius(radius))
    return pad_with_first(found.idx).to(torch.int32)


def ball_query(radius: float, nsample: int, xyz: torch.Tensor,
               new_xyz: torch.Tensor) -> torch.Tensor:
    """Ball query with pointnet2_ops' semantics.

    Args:
        radius: ball radius (>= 0); a point is inside when its squared distance < radius^2.
        nsample: the most points kept per ball.
        xyz: (B, N, 3) points; new_xyz: (B, npoint, 3) ball centres.

    Returns:
        (B, npoint, nsample) int32: the first ``nsample`` points inside each ball in index
        order; unused slots repeat the first one, and an empty ball is all index 0 (as the
        original, whose output starts as zeros). Not differentiable.
    """
    return BallQuery.apply(radius, nsample, xyz, new_xyz)


# --------------------------------------------------------------------------------------------
# Grouping modules
# --------------------------------------------------------------------------------------------

class QueryAndGroup(nn.Module):
    """Ball-query grouping: centred neighbour coordinates, then their features.

    ``forward(xyz (B, N, 3), new_xyz (B, npoint, 3), features (B, C, N) or None)`` ->
    (B, 3 + C, npoint, nsample) with ``use_xyz`` (B, C, ... without; (B, 3, ...) without
    features).
    """

    def __init__(self, radius: float, nsample: int, use_xyz: bool = True):
        super().__init__()
        self.radius, self.nsample, self.use_xyz = radius, nsample, use_xyz

    def forward(self, xyz, new_xyz, features=None):
        if features is None and not self.use_xyz:
            raise ValueError("QueryAndGroup needs features when use_xyz is False: there would "
                             "be nothing to group")
        idx = ball_query(self.radius, self.nsample, xyz, new_xyz)  # (B, npoint, nsample)
        grouped_xyz = grouping_operation(xyz.transpose(1, 2), idx)  # (B, 3, npoint, nsample)
        grouped_xyz = grouped_xyz - new_xyz.transpose(1, 2).unsqueeze(-1)
        if features is None:
            return grouped_xyz
        grouped_features = grouping_operation(features, idx)  # (B, C, npoint, nsample)
        if not self.use_xyz:
            return grouped_features
        return torch.cat([grouped_xyz, grouped_features], dim=1)  # (B, 3 + C, npoint, nsample)


class GroupAll(nn.Module):
    """One group holding every point: ``forward(xyz (B, N, 3), new_xyz (ignored), features
    (B, C, N) or None)`` -> (B, 3 + C, 1, N) with ``use_xyz`` ((B, C, 1, N) without,
    (B, 3, 1, N) without features)."""

    def __init__(self, use_xyz: bool = True):
        super().__init__()
        self.use_xyz = use_xyz

    def forward(self, xyz, new_xyz=None, features=None):
        grouped_xyz = xyz.transpose(1, 2).unsqueeze(2)  # (B, 3, 1, N)
        if features is None:
            return grouped_xyz
        grouped_features = features.unsqueeze(2)  # (B, C, 1, N)
        if not self.use_xyz:
            return grouped_features
        return torch.cat([grouped_xyz, grouped_features], dim=1)  # (B, 3 + C, 1, N)


_PUBLIC = [furthest_point_sample, gather_operation, grouping_operation, ball_query, three_nn,
           three_interpolate, FurthestPointSampling, GatherOperation, GroupingOperation,
           BallQuery, ThreeNN, ThreeInterpolate, QueryAndGroup, GroupAll]

pointnet2_utils = types.ModuleType(
    "pointnet2_ops.pointnet2_utils",
    "pointnet2_ops.pointnet2_utils replacement backed by recon_fast.ops.")
for _name in _PUBLIC:
    setattr(pointnet2_utils, _name.__name__, _name)
pointnet2_utils.__all__ = [f.__name__ for f in _PUBLIC]
del _name

__all__ = ["pointnet2_utils", "pointnet2_modules", *pointnet2_utils.__all__]

# Imported last: the modules are built from pointnet2_utils above.
from recon_fast.compat import pointnet2_modules  # noqa: E402
