"""Ball query (torch.ops.recon_fast.ball_query), differentiable through the distances."""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch

from recon_fast.ops._validation import check_count, check_pair, check_points, lengths_or_full
from recon_fast.ops.gather_points import gather_points


class BallQuery(NamedTuple):
    """Result of :func:`ball_query`: squared distances (B, M, k), indices (B, M, k) with -1 in
    unused slots and, if asked, the neighbour coordinates (B, M, k, D), zeros in unused slots."""

    dists: torch.Tensor
    idx: torch.Tensor
    knn: Optional[torch.Tensor] = None


@torch.library.register_fake("recon_fast::ball_query")
def _ball_query_fake(query, points, query_lengths, point_lengths, k, radius):
    shape = (query.shape[0], query.shape[1], k)
    return query.new_empty(shape), query.new_empty(shape, dtype=torch.int64)


@torch.library.register_fake("recon_fast::ball_query_backward")
def _ball_query_backward_fake(grad_dist, query, points, idx):
    return torch.empty_like(query), torch.empty_like(points)


def _setup_context(ctx, inputs, output):
    query, points = inputs[0], inputs[1]
    _, idx = output
    ctx.save_for_backward(query, points, idx)
    ctx.mark_non_differentiable(idx)


def _backward(ctx, grad_dist, _grad_idx):
    query, points, idx = ctx.saved_tensors
    grad_query, grad_points = torch.ops.recon_fast.ball_query_backward(
        grad_dist.to(query.dtype).contiguous(), query, points, idx)
    return grad_query, grad_points, None, None, None, None


torch.library.register_autograd("recon_fast::ball_query", _backward, setup_context=_setup_context)


def check_radius(radius, name: str = "radius") -> float:
    """`radius` as a finite float >= 0."""
    if isinstance(radius, bool) or not isinstance(radius, (int, float)):
        raise ValueError(f"{name} must be a number, got {type(radius).__name__}")
    radius = float(radius)
    if not math.isfinite(radius) or radius < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {radius}")
    return radius


def ball_query(query: torch.Tensor, points: torch.Tensor, k: int, radius: float,
               query_lengths: torch.Tensor | None = None,
               point_lengths: torch.Tensor | None = None, *,
               return_nn: bool = False) -> BallQuery:
    """The first `k` `points` (in index order) within `radius` of every `query` point.

    A point belongs to the ball when its squared distance is strictly below ``radius ** 2``
    (both computed in float32, float64 for float64 inputs), as in pointnet2_ops and pytorch3d.
    The neighbours are not the nearest ones, just the first ones found.

    Args:
        query: (B, M, D) ball centres; points: (B, N, D) candidates, same dtype and device,
            any D >= 1.
        k: the most neighbours kept per query, k >= 1 (may exceed N).
        radius: ball radius, finite and >= 0.
        query_lengths, point_lengths: optional (B,) valid sizes of padded clouds.
        return_nn: also gather the neighbour coordinates (B, M, k, D).

    Returns:
        BallQuery(dists, idx, knn): squared distances and int64 indices (B, M, k) in index
        order; unused slots and padded queries hold idx -1 and distance 0. ``dists`` is
        differentiable w.r.t. ``query`` and ``points``.
    """
    check_points(query, "query", channels=None)
    check_points(points, "points", channels=None)
    check_pair(query, "query", points, "points")
    if query.shape[2] != points.shape[2] or query.shape[2] == 0:
        raise ValueError(f"query and points must have the same point dimension D >= 1, got "
                         f"shapes {tuple(query.shape)} and {tuple(points.shape)}")
    k = check_count(k, "k", 1, 2**31 - 1, "neighbours kept per query")
    radius = check_radius(radius)
    query_lengths = lengths_or_full(query_lengths, "query_lengths", query, "query")
    point_lengths = lengths_or_full(point_lengths, "point_lengths", points, "points")
    dists, idx = torch.ops.recon_fast.ball_query(query, points, query_lengths, point_lengths, k,
                                                 radius)
    neighbours = gather_points(points, idx) if return_nn else None
    return BallQuery(dists, idx, neighbours)


def pad_with_first(idx: torch.Tensor) -> torch.Tensor:
    """pointnet2_ops' padding of ball-query indices: unused slots (-1) repeat the first
    neighbour found, and a ball with no point at all is index 0 throughout."""
    first = idx[..., :1].clamp_min(0)  # (..., 1): 0 when nothing was found
    return torch.where(idx < 0, first, idx)
