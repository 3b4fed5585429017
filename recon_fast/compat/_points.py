"""Helpers the shims share: point clouds of dimension D <= 3 as xyz (for Chamfer), flat batches as
padded."""

from __future__ import annotations

import torch

from recon_fast.ops.validate import describe

def as_xyz(points: torch.Tensor, name: str) -> torch.Tensor:
    """(..., D) points with 1 <= D <= 3 as (..., 3), zero-padded: the added coordinates are 0 for
    every point, so distances (and hence neighbours and ties) are exactly those in D dimensions.
    Used where a kernel takes xyz only (Chamfer); other D raise ValueError."""
    D = points.shape[-1]
    if D == 3:
        return points
    if D == 0:
        raise ValueError(f"{name} must have points of dimension D >= 1, got {describe(points)}")
    if D > 3:
        raise ValueError(f"{name} has points of dimension D = {D} ({describe(points)}); "
                         f"the xyz kernels take D = 1, 2 or 3")
    return torch.cat([points, points.new_zeros((*points.shape[:-1], 3 - D))], dim=-1)


def batch_pointers(batch: torch.Tensor | None, num_points: int, batch_size: int | None,
                   name: str, device: torch.device) -> torch.Tensor:
    """(B + 1,) int64 offsets of each example in a flat, sorted batch vector (CSR pointers)."""
    if batch is None:
        size = 1 if batch_size is None else batch_size
        ptr = torch.zeros(size + 1, dtype=torch.int64, device=device)
        ptr[1:] = num_points
        return ptr
    if not isinstance(batch, torch.Tensor) or batch.dim() != 1 or batch.numel() != num_points:
        seen = describe(batch) if isinstance(batch, torch.Tensor) else type(batch).__name__
        raise ValueError(f"{name} must be a (N,) = ({num_points},) integer tensor assigning each "
                         f"point to an example, got {seen}")
    if batch.dtype.is_floating_point or batch.dtype == torch.bool:
        raise ValueError(f"{name} must hold integers, got {describe(batch)}")
    batch = batch.to(device=device, dtype=torch.int64)
    if num_points > 0:
        if int(batch.min()) < 0:
            raise ValueError(f"{name} must hold example numbers >= 0, got {int(batch.min())}")
        if bool((batch[1:] < batch[:-1]).any()):
            raise ValueError(f"{name} must be sorted (the points of each example contiguous)")
    size = batch_size if batch_size is not None else (int(batch.max()) + 1 if num_points else 1)
    counts = torch.bincount(batch, minlength=size)
    if counts.numel() > size:
        raise ValueError(f"{name} holds example {counts.numel() - 1} but batch_size is {size}")
    ptr = torch.zeros(size + 1, dtype=torch.int64, device=device)
    ptr[1:] = torch.cumsum(counts, 0)
    return ptr


def pointers_from_ptr(ptr, num_points: int, device: torch.device) -> torch.Tensor:
    """A user-given CSR ``ptr`` (tensor or list) as checked (B + 1,) int64 offsets."""
    ptr = torch.as_tensor(ptr, device=device)
    if ptr.dim() != 1 or ptr.numel() < 1 or ptr.dtype.is_floating_point:
        raise ValueError(f"ptr must be a 1-D integer tensor or list of B + 1 offsets, got "
                         f"{describe(ptr)}")
    ptr = ptr.to(torch.int64)
    if int(ptr[0]) != 0 or int(ptr[-1]) != num_points or bool((ptr[1:] < ptr[:-1]).any()):
        raise ValueError(f"ptr must rise from 0 to the number of points {num_points}, got "
                         f"{ptr.tolist()}")
    return ptr


def pad_flat(x: torch.Tensor, ptr: torch.Tensor):
    """Flat points (N, F) split by CSR pointers -> (padded (B, P, F), lengths (B,), example (N,)):
    point t of example b = example[t] sits at padded[b, t - ptr[b]]."""
    lengths = ptr[1:] - ptr[:-1]  # (B,)
    B = lengths.numel()
    P = int(lengths.max()) if B > 0 else 0
    example = torch.repeat_interleave(torch.arange(B, device=x.device), lengths)  # (N,)
    slot = torch.arange(x.shape[0], device=x.device) - ptr[example]
    padded = x.new_zeros((B, P, x.shape[1]))
    padded[example, slot] = x
    return padded, lengths, example
