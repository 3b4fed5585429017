"""k nearest neighbours (torch.ops.recon_fast.knn), differentiable through the distances."""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from recon_fast.ops._validation import (check_backward_indices, check_count, check_pair,
                                        check_points, check_same_dim, lengths_or_full)
from recon_fast.ops.gather_points import gather_points


class KNN(NamedTuple):
    """Result of :func:`knn`: distances (B, M, k), indices (B, M, k) and, if asked, the
    neighbour coordinates (B, M, k, D)."""

    dists: torch.Tensor
    idx: torch.Tensor
    knn: Optional[torch.Tensor] = None


@torch.library.register_fake("recon_fast::knn")
def _knn_fake(query, points, query_lengths, point_lengths, k, norm):
    shape = (query.shape[0], query.shape[1], k)
    return query.new_empty(shape), query.new_empty(shape, dtype=torch.int64)


@torch.library.register_fake("recon_fast::knn_backward")
def _knn_backward_fake(grad_dist, query, points, idx, norm):
    # Contiguous like the kernels' outputs, whatever the strides of query and points.
    return query.new_empty(query.shape), points.new_empty(points.shape)


def _setup_context(ctx, inputs, output):
    query, points, _, _, _, norm = inputs
    _, idx = output
    ctx.save_for_backward(query, points, idx)
    ctx.norm = norm
    ctx.mark_non_differentiable(idx)


def _backward(ctx, grad_dist, _grad_idx):
    query, points, idx = ctx.saved_tensors
    check_backward_indices(idx, "idx", points.shape[1])
    grad_query, grad_points = torch.ops.recon_fast.knn_backward(
        grad_dist.to(query.dtype).contiguous(), query, points, idx, ctx.norm)
    return grad_query, grad_points, None, None, None, None


torch.library.register_autograd("recon_fast::knn", _backward, setup_context=_setup_context)


def knn(query: torch.Tensor, points: torch.Tensor, k: int,
        query_lengths: torch.Tensor | None = None, point_lengths: torch.Tensor | None = None, *,
        norm: int = 2, return_nn: bool = False) -> KNN:
    """The `k` nearest `points` of every `query` point.

    Args:
        query: (B, M, D) query points; points: (B, N, D) candidates (same dtype, device and
            point dimension, any D >= 1; D = 3 has the fastest kernels).
        k: number of neighbours, 1 <= k <= N.
        query_lengths, point_lengths: optional (B,) valid sizes of padded clouds.
        norm: 2 for squared Euclidean distances, 1 for L1 distances.
        return_nn: also gather the neighbour coordinates (B, M, k, D).

    Returns:
        KNN(dists, idx, knn): neighbours sorted by distance, ties to the lowest index. Missing
        neighbours (k > point_lengths[b]) and padded queries get idx -1 and distance 0.
        `dists` is differentiable w.r.t. `query` and `points`.
    """
    check_points(query, "query", any_dim=True)
    check_points(points, "points", any_dim=True)
    check_pair(query, "query", points, "points")
    check_same_dim(query, "query", points, "points")
    if norm not in (1, 2):
        raise ValueError(f"norm must be 1 (L1) or 2 (squared L2), got {norm!r}")
    N = points.shape[1]
    k = check_count(k, "k", 1, max(N, 1), f"number of neighbours; points has N = {N}")
    if N == 0:
        raise ValueError(f"points is empty ({tuple(points.shape)}): there are no neighbours to find")
    query_lengths = lengths_or_full(query_lengths, "query_lengths", query, "query")
    point_lengths = lengths_or_full(point_lengths, "point_lengths", points, "points")
    dists, idx = torch.ops.recon_fast.knn(query, points, query_lengths, point_lengths, k, norm)
    neighbours = gather_points(points, idx) if return_nn else None
    return KNN(dists, idx, neighbours)
