"""Batch point subsampling done on the device by the finetune/eval loops.

* "FPS then random" (finetune training, voting, zero-shot): farthest point sampling to
  ``point_all`` points, then one random ``npoints``-subset of those indices (no replacement),
  shared by the whole batch.
* Plain FPS (validation, SVM features): farthest point sampling straight to ``npoints``.

FPS follows pointnet2_ops' ``furthest_point_sample`` (the official code's): start at index 0,
ties to the lowest index and, by default, never pick points whose squared norm is <= 1e-3
(``pointnet2_compat=False`` drops that quirk).
"""

from __future__ import annotations

from typing import Optional

import torch

from recon_fast import ops
from recon_fast.errors import ConfigError, DataError
from recon_fast.ops.fps import POINTNET2_MIN_NORM_SQ

# npoints -> number of FPS points the random subset is drawn from (tools/runner_finetune.py).
POINT_ALL = {1024: 1200, 2048: 2400, 4096: 4800, 8192: 8192}


def check_point_all(npoints: int) -> None:
    """Refuse an `npoints` that FPS-then-random subsampling (finetuning, voting) has no pool
    size for, before a run starts rather than at its first batch."""
    if npoints not in POINT_ALL:
        raise ConfigError(f"npoints must be one of {sorted(POINT_ALL)} for FPS-then-random "
                          f"subsampling (the official finetuning pools), got {npoints!r}")


def point_all_for(npoints: int, available: int) -> int:
    """The FPS pool size for `npoints` (1200/2400/4800/8192), capped at the points available."""
    check_point_all(npoints)
    if available < npoints:
        raise DataError(f"cannot draw npoints={npoints} from clouds of {available} points")
    return min(POINT_ALL[npoints], available)


def fps_indices(points: torch.Tensor, count: int, *, pointnet2_compat: bool = True) -> torch.Tensor:
    """(B, N, 3) -> (B, count) int64 FPS indices starting at index 0."""
    return ops.fps(points[..., :3], count,
                   min_norm_sq=POINTNET2_MIN_NORM_SQ if pointnet2_compat else None)


def fps_sample(points: torch.Tensor, npoints: int, *,
               pointnet2_compat: bool = True) -> torch.Tensor:
    """Plain FPS: (B, N, C) -> (B, npoints, C), deterministic."""
    idx = fps_indices(points, npoints, pointnet2_compat=pointnet2_compat)
    return ops.gather_points(points, idx)


def random_subset(points: torch.Tensor, pool_idx: torch.Tensor, npoints: int,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Gather one random `npoints`-subset of the pool columns (the same columns for every cloud).

    Args:
        points: (B, N, C) clouds.
        pool_idx: (B, P) indices into N, e.g. from :func:`fps_indices`; P >= npoints.
        generator: optional generator on ``points.device``.
    Returns:
        (B, npoints, C)
    """
    pool = pool_idx.shape[1]
    if npoints > pool:
        raise ValueError(f"npoints={npoints} exceeds the pool of {pool} indices")
    columns = torch.randperm(pool, generator=generator, device=pool_idx.device)[:npoints]
    return ops.gather_points(points, pool_idx[:, columns])  # (B, npoints, C)


def fps_then_random(points: torch.Tensor, npoints: int,
                    generator: Optional[torch.Generator] = None, *,
                    pointnet2_compat: bool = True) -> torch.Tensor:
    """FPS to ``point_all_for(npoints)``, then a random `npoints`-subset shared by the batch.

    For voting, call :func:`fps_indices` once and :func:`random_subset` per vote instead.
    """
    pool = fps_indices(points, point_all_for(npoints, points.shape[1]),
                       pointnet2_compat=pointnet2_compat)
    return random_subset(points, pool, npoints, generator)
