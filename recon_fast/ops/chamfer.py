"""Chamfer distance (torch.ops.recon_fast.chamfer) and the reduced losses built on it."""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch

from recon_fast.errors import InputError
from recon_fast.ops._validation import (check_backward_indices, check_pair, check_points,
                                        data_checks_enabled, describe, lengths_or_full)
from recon_fast.ops.chamfer_loss import fused_chamfer_loss, fused_loss_applies


class Chamfer(NamedTuple):
    """Nearest neighbours both ways: dist_xy (B, N), dist_yx (B, M), idx_xy (B, N), idx_yx (B, M)."""

    dist_xy: torch.Tensor
    dist_yx: torch.Tensor
    idx_xy: torch.Tensor
    idx_yx: torch.Tensor


@torch.library.register_fake("recon_fast::chamfer")
def _chamfer_fake(x, y, x_lengths, y_lengths, norm):
    B, N, M = x.shape[0], x.shape[1], y.shape[1]
    return (x.new_empty((B, N)), x.new_empty((B, M)), x.new_empty((B, N), dtype=torch.int64),
            x.new_empty((B, M), dtype=torch.int64))


@torch.library.register_fake("recon_fast::chamfer_backward")
def _chamfer_backward_fake(grad_dist_xy, grad_dist_yx, x, y, idx_xy, idx_yx, norm):
    # Contiguous like the kernels' outputs, whatever the strides of x and y.
    return x.new_empty(x.shape), y.new_empty(y.shape)


def _setup_context(ctx, inputs, output):
    x, y, _, _, norm = inputs
    _, _, idx_xy, idx_yx = output
    ctx.save_for_backward(x, y, idx_xy, idx_yx)
    ctx.norm = norm
    ctx.mark_non_differentiable(idx_xy, idx_yx)


def _backward(ctx, grad_xy, grad_yx, _grad_idx_xy, _grad_idx_yx):
    x, y, idx_xy, idx_yx = ctx.saved_tensors
    check_backward_indices(idx_xy, "idx_xy", y.shape[1])
    check_backward_indices(idx_yx, "idx_yx", x.shape[1])
    grad_xy = torch.zeros_like(idx_xy, dtype=x.dtype) if grad_xy is None else grad_xy
    grad_yx = torch.zeros_like(idx_yx, dtype=x.dtype) if grad_yx is None else grad_yx
    grad_x, grad_y = torch.ops.recon_fast.chamfer_backward(
        grad_xy.to(x.dtype).contiguous(), grad_yx.to(x.dtype).contiguous(), x, y, idx_xy, idx_yx,
        ctx.norm)
    return grad_x, grad_y, None, None, None


torch.library.register_autograd("recon_fast::chamfer", _backward, setup_context=_setup_context)


def chamfer(x: torch.Tensor, y: torch.Tensor, x_lengths: torch.Tensor | None = None,
            y_lengths: torch.Tensor | None = None, *, norm: int = 2) -> Chamfer:
    """Nearest-neighbour distances from every x point to y and from every y point to x.

    Args:
        x: (B, N, 3); y: (B, M, 3), same dtype and device.
        x_lengths, y_lengths: optional (B,) valid sizes of padded clouds.
        norm: 2 for squared Euclidean distances (pointnet2/Point-MAE), 1 for L1 (pytorch3d).

    Returns:
        Chamfer(dist_xy, dist_yx, idx_xy, idx_yx); ties go to the lowest index, padded points
        and points whose other cloud is empty get distance 0 and index -1. The distances are
        differentiable w.r.t. x and y.
    """
    check_points(x, "x")
    check_points(y, "y")
    check_pair(x, "x", y, "y")
    if norm not in (1, 2):
        raise ValueError(f"norm must be 1 (L1) or 2 (squared L2), got {norm!r}")
    x_lengths = lengths_or_full(x_lengths, "x_lengths", x, "x")
    y_lengths = lengths_or_full(y_lengths, "y_lengths", y, "y")
    return Chamfer(*torch.ops.recon_fast.chamfer(x, y, x_lengths, y_lengths, norm))


def _check_not_empty(points: torch.Tensor, lengths, name: str, lengths_name: str) -> None:
    """A mean over no points is NaN (or a silent 0 with lengths): refuse empty clouds."""
    if points.shape[1] == 0:
        raise ValueError(f"{name} holds empty clouds ({describe(points)}): the Chamfer "
                         "distance of an empty cloud is undefined")
    if lengths is not None and data_checks_enabled() and points.shape[0] > 0:
        empty = (torch.as_tensor(lengths) == 0).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"{lengths_name} is 0 for clouds {empty}: the Chamfer distance of "
                             "an empty cloud is undefined")


def _masked_mean(dist: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Per-cloud mean over valid points (padded entries are 0 already)."""
    if lengths is None:
        return dist.mean(dim=1)
    return dist.sum(dim=1) / lengths.to(dist.device).clamp_min(1).to(dist.dtype)


LOSS_DISTANCES = {"squared": 2, "euclidean": 1}  # chamfer_distance(distance=...) -> its exponent


def _loss_norm(distance: str, norm: int | None) -> int:
    """The exponent (2: squared, 1: Euclidean) for chamfer_distance's `distance`, or for the
    deprecated `norm` spelling when given."""
    if norm is not None:
        warnings.warn("chamfer_distance(norm=...) is deprecated: use distance='squared' (norm=2) "
                      "or distance='euclidean' (norm=1); in ops.chamfer, norm=1 means the L1 "
                      "distance instead", DeprecationWarning, stacklevel=3)
        if norm not in (1, 2):
            raise InputError(f"norm must be 1 (ChamferDistanceL1) or 2 (ChamferDistanceL2), "
                             f"got {norm!r}")
        return norm
    if distance not in LOSS_DISTANCES:
        raise InputError(f"distance must be one of {tuple(LOSS_DISTANCES)}, got {distance!r}")
    return LOSS_DISTANCES[distance]


def chamfer_distance(x: torch.Tensor, y: torch.Tensor, x_lengths: torch.Tensor | None = None,
                     y_lengths: torch.Tensor | None = None, *, distance: str = "squared",
                     reduction: str = "mean", norm: int | None = None) -> torch.Tensor:
    """Chamfer loss as Point-MAE / ReCon define it, computed in float32 (float64 for float64).

    distance="squared" (Point-MAE's ChamferDistanceL2, ReCon's reconstruction loss): mean squared
    Euclidean nearest-neighbour distance x->y plus the same y->x. distance="euclidean"
    (ChamferDistanceL1): the mean Euclidean nearest-neighbour distance x->y plus y->x, halved.

    Args:
        x: (B, N, 3); y: (B, M, 3). Half inputs are upcast to float32 first.
        x_lengths, y_lengths: optional (B,) valid sizes of padded clouds.
        distance: "squared" or "euclidean" (see above).
        reduction: "mean" over the batch (Point-MAE), "sum", or "none" for a (B,) tensor.
        norm: deprecated spelling of `distance` (2 = "squared", 1 = "euclidean"); in
            :func:`chamfer`, norm=1 means the L1 distance, which this loss never used.

    Raises:
        ValueError: an empty cloud (N or M = 0, or a length of 0), or an empty batch with
            reduction "mean": the loss would be NaN, and no value would be right.
    """
    norm = _loss_norm(distance, norm)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if isinstance(x, torch.Tensor) and x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    if isinstance(y, torch.Tensor) and y.dtype in (torch.float16, torch.bfloat16):
        y = y.float()
    if fused_loss_applies(x, y, x_lengths, y_lengths):  # many small full clouds on CUDA
        return fused_chamfer_loss(x, y, norm=norm, reduction=reduction)
    result = chamfer(x, y, x_lengths, y_lengths, norm=2)
    _check_not_empty(x, x_lengths, "x", "x_lengths")
    _check_not_empty(y, y_lengths, "y", "y_lengths")
    if reduction == "mean" and x.shape[0] == 0:
        raise ValueError(f"x holds no clouds ({describe(x)}): the mean over an empty batch is "
                         "undefined; use reduction='sum' or 'none'")
    d_xy, d_yx = result.dist_xy, result.dist_yx
    if norm == 1:
        # sqrt of a clamped value: the same numbers, but a finite gradient at exact matches.
        tiny = torch.finfo(d_xy.dtype).tiny
        d_xy, d_yx = d_xy.clamp_min(tiny).sqrt(), d_yx.clamp_min(tiny).sqrt()
        if x_lengths is not None:
            d_xy = d_xy * (result.idx_xy >= 0)
        if y_lengths is not None:
            d_yx = d_yx * (result.idx_yx >= 0)
    per_cloud = _masked_mean(d_xy, x_lengths) + _masked_mean(d_yx, y_lengths)
    if norm == 1:
        per_cloud = per_cloud / 2
    if reduction == "mean":
        return per_cloud.mean()
    if reduction == "sum":
        return per_cloud.sum()
    return per_cloud
