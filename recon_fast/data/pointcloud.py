"""Point-cloud normalisation (per sample, numpy) and batch augmentations (torch, any device).

The augmentations follow ReCon's ``datasets/data_transforms.py`` semantics but draw all random
numbers for the whole batch at once on the points' device (no per-sample Python loop, no host
round trip), and return a new tensor instead of writing into the input.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np
import torch


def pc_norm(points: np.ndarray) -> np.ndarray:
    """Centre a (N, 3) cloud on its centroid and scale it into the unit sphere (max norm 1).

    Raises:
        ValueError: if all points coincide (the scale would be 0).
    """
    centred = points - points.mean(axis=0)
    radius = np.sqrt((centred ** 2).sum(axis=1)).max()
    if not radius > 0:
        raise ValueError(f"cannot normalise a degenerate point cloud: all {len(points)} points "
                         "coincide")
    return centred / radius


def normalize_xyz(points: np.ndarray, use_normals: bool = False) -> np.ndarray:
    """pc_norm on the xyz columns of an (N, 3+) array; keep the other columns only if `use_normals`.

    Returns a new float32 array (the official loaders normalise their cached arrays in place).
    """
    out = points[:, :6 if use_normals else 3].astype(np.float32, copy=True)
    out[:, :3] = pc_norm(out[:, :3])
    return out


def _check_batch(points: torch.Tensor, name: str, exact_three: bool) -> None:
    if not isinstance(points, torch.Tensor) or points.dim() != 3 or not points.is_floating_point():
        got = (f"shape {tuple(points.shape)}, dtype {points.dtype}"
               if isinstance(points, torch.Tensor) else type(points).__name__)
        raise ValueError(f"{name}: points must be a float tensor of shape (B, N, C), got {got}")
    if (exact_three and points.shape[2] != 3) or points.shape[2] < 3:
        want = "3" if exact_three else ">= 3"
        raise ValueError(f"{name}: points must have {want} channels, got shape "
                         f"{tuple(points.shape)}")


def _uniform(shape: tuple[int, ...], low: float, high: float, like: torch.Tensor,
             generator: Optional[torch.Generator]) -> torch.Tensor:
    u = torch.rand(shape, generator=generator, device=like.device, dtype=torch.float32)
    return low + (high - low) * u


def rotation_y_matrices(angles: torch.Tensor) -> torch.Tensor:
    """(B,) angles -> (B, 3, 3) matrices R with ``points @ R`` rotating about the y axis.

    R = [[c, 0, s], [0, 1, 0], [-s, 0, c]] (the official PointcloudRotate matrix).
    """
    c, s = torch.cos(angles), torch.sin(angles)
    zero, one = torch.zeros_like(c), torch.ones_like(c)
    rows = [torch.stack([c, zero, s], -1), torch.stack([zero, one, zero], -1),
            torch.stack([-s, zero, c], -1)]
    return torch.stack(rows, dim=-2)  # (B, 3, 3)


def rotate_y(points: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """PointcloudRotate: rotate each cloud of (B, N, 3) about y by an angle drawn from U[0, 2pi).

    `generator`, if given, must live on ``points.device``. Half inputs are rotated in float32.
    """
    _check_batch(points, "rotate_y", exact_three=True)
    angles = _uniform((points.shape[0],), 0.0, 2 * math.pi, points, generator)
    rot = rotation_y_matrices(angles)
    return torch.bmm(points.float(), rot).to(points.dtype)


def scale_and_translate(points: torch.Tensor, scale_low: float = 2.0 / 3.0,
                        scale_high: float = 3.0 / 2.0, translate_range: float = 0.2,
                        generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """PointcloudScaleAndTranslate: per cloud, xyz * U(low, high)^3 + U(-range, range)^3.

    Extra channels (normals) are passed through unchanged, as in the official transform.
    """
    _check_batch(points, "scale_and_translate", exact_three=False)
    B = points.shape[0]
    scale = _uniform((B, 1, 3), scale_low, scale_high, points, generator)
    shift = _uniform((B, 1, 3), -translate_range, translate_range, points, generator)
    out = points.clone()
    out[..., :3] = (points[..., :3].float() * scale + shift).to(points.dtype)
    return out


def scale(points: torch.Tensor, scale_low: float = 2.0 / 3.0, scale_high: float = 3.0 / 2.0,
          generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """PointcloudScale (ModelNet voting): per cloud, xyz * U(low, high)^3, no translation."""
    _check_batch(points, "scale", exact_three=False)
    factors = _uniform((points.shape[0], 1, 3), scale_low, scale_high, points, generator)
    out = points.clone()
    out[..., :3] = (points[..., :3].float() * factors).to(points.dtype)
    return out


class PointcloudRotate:
    """Callable form of :func:`rotate_y` (batch augmentation for (B, N, 3) clouds)."""

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        return rotate_y(points)


class PointcloudScaleAndTranslate:
    """Callable form of :func:`scale_and_translate`."""

    def __init__(self, scale_low: float = 2.0 / 3.0, scale_high: float = 3.0 / 2.0,
                 translate_range: float = 0.2):
        self.scale_low, self.scale_high = scale_low, scale_high
        self.translate_range = translate_range

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        return scale_and_translate(points, self.scale_low, self.scale_high, self.translate_range)


class PointcloudScale:
    """Callable form of :func:`scale`."""

    def __init__(self, scale_low: float = 2.0 / 3.0, scale_high: float = 3.0 / 2.0):
        self.scale_low, self.scale_high = scale_low, scale_high

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        return scale(points, self.scale_low, self.scale_high)


def _identity(points: torch.Tensor) -> torch.Tensor:
    return points


def train_augmentation(dataset_name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The batch augmentation the official runners apply while training on `dataset_name`.

    "ModelNet" finetuning uses scale-and-translate; everything else (ShapeNet pretraining,
    ScanObjectNN variants, "ModelNetFewShot", the embedded shapes) uses the y-axis rotation.
    """
    return PointcloudScaleAndTranslate() if dataset_name == "ModelNet" else PointcloudRotate()


def vote_augmentation(dataset_name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The batch transform of each voting pass: scale for ModelNet, y rotation for
    ScanObjectNN_hardest, nothing for the other datasets (OBJ_BG, OBJ_ONLY, few-shot)."""
    if dataset_name == "ModelNet":
        return PointcloudScale()
    if dataset_name == "ScanObjectNN_hardest":
        return PointcloudRotate()
    return _identity
