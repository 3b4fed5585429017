"""Gather point rows by index (torch.ops.recon_fast.gather_points), with scatter-add backward."""

from __future__ import annotations

import math

import torch

from recon_fast.ops._validation import (check_backward_indices, check_points, data_checks_enabled,
                                        describe)


@torch.library.register_fake("recon_fast::gather_points")
def _gather_points_fake(points, idx):
    return points.new_empty((points.shape[0], idx.shape[1], points.shape[2]))


@torch.library.register_fake("recon_fast::gather_points_backward")
def _gather_points_backward_fake(grad_out, idx, num_points):
    return grad_out.new_empty((grad_out.shape[0], num_points, grad_out.shape[2]))


def _setup_context(ctx, inputs, output):
    points, idx = inputs
    ctx.save_for_backward(idx)
    ctx.num_points = points.shape[1]


def _backward(ctx, grad_out):
    (idx,) = ctx.saved_tensors
    check_backward_indices(idx, "idx", ctx.num_points)
    grad = torch.ops.recon_fast.gather_points_backward(grad_out.contiguous(), idx, ctx.num_points)
    return grad, None


torch.library.register_autograd("recon_fast::gather_points", _backward,
                                setup_context=_setup_context)


def gather_points(points: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``out[b, ...] = points[b, idx[b, ...]]`` for (B, N, C) points and (B, ...) int indices.

    Index -1 (the padding of fps/knn) gives a row of zeros. Differentiable w.r.t. `points`
    (the backward is a scatter-add, accumulated in float32 for half types).

    Returns:
        (B, *idx.shape[1:], C)
    """
    check_points(points, "points", channels=None)
    if not isinstance(idx, torch.Tensor) or idx.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"idx must be an int64 or int32 tensor, got "
                         f"{describe(idx) if isinstance(idx, torch.Tensor) else type(idx).__name__}")
    if idx.dim() < 1 or idx.shape[0] != points.shape[0]:
        raise ValueError(f"idx must start with the batch dimension B = {points.shape[0]}, "
                         f"got {describe(idx)}")
    if idx.device != points.device:
        raise ValueError(f"idx is on {idx.device} but points is on {points.device}")
    N = points.shape[1]
    if data_checks_enabled() and idx.numel() > 0:
        low, high = int(idx.min()), int(idx.max())
        if low < -1 or high >= N:
            raise ValueError(f"idx values must lie in [-1, {N - 1}] for points with N = {N}, "
                             f"got values in [{low}, {high}]")
    # Explicit sizes: reshape(B, -1) cannot infer -1 when B == 0.
    flat = idx.reshape(idx.shape[0], math.prod(idx.shape[1:])).to(torch.int64)
    out = torch.ops.recon_fast.gather_points(points, flat)
    return out.reshape(*idx.shape, points.shape[2])
