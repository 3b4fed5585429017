"""Drop-in replacement for Point-MAE / ReCon's ``extensions.chamfer_dist``.

Swap ``from extensions.chamfer_dist import ChamferDistanceL1, ChamferDistanceL2`` for
``from recon_fast.compat.chamfer_dist import ChamferDistanceL1, ChamferDistanceL2``; no CUDA
extension has to be built. The losses, their ``ignore_zeros`` option and ``ChamferFunction``
behave as the originals:

- ``ChamferFunction.apply(xyz1, xyz2)`` -> (dist1 (B, N), dist2 (B, M)): squared distance of
  every point to its nearest neighbour in the other cloud, differentiable w.r.t. both clouds.
- ``ChamferDistanceL2()(xyz1, xyz2)`` = mean(dist1) + mean(dist2) (ReCon's reconstruction loss).
- ``ChamferDistanceL2_split()(xyz1, xyz2)`` = (mean(dist1), mean(dist2)).
- ``ChamferDistanceL1()(xyz1, xyz2)`` = (mean(sqrt(dist1)) + mean(sqrt(dist2))) / 2.
- ``ignore_zeros=True`` drops, for a batch of one cloud only, the points whose coordinates sum
  to exactly 0 (the original's test for zero padding, which also drops e.g. (1, -1, 0)).

Differences: CPU and CUDA; float16/bfloat16/float64 as well as float32 (the losses of half
inputs are computed and returned in float32; ``ChamferFunction`` keeps the input dtype);
non-contiguous inputs; ``ValueError`` for malformed clouds or when ``ignore_zeros`` leaves a
cloud empty (the original returns NaN); the L1 loss has a finite gradient where two points
coincide (the original's sqrt gives NaN there).
"""

from __future__ import annotations

import torch

from recon_fast.ops import chamfer, chamfer_distance
from recon_fast.ops.validate import check_pair, check_points, describe


def _check_clouds(xyz1, xyz2) -> None:
    check_points(xyz1, "xyz1")
    check_points(xyz2, "xyz2")
    check_pair(xyz1, "xyz1", xyz2, "xyz2")


class ChamferFunction:
    """Stand-in for Point-MAE's ``ChamferFunction`` autograd function; call ``apply``."""

    @staticmethod
    def apply(xyz1: torch.Tensor, xyz2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, 3), (B, M, 3) -> squared nearest-neighbour distances (B, N) and (B, M).

        Ties go to the lowest index; differentiable w.r.t. both clouds; dtype of the inputs.
        """
        _check_clouds(xyz1, xyz2)
        nearest = chamfer(xyz1, xyz2, norm=2)
        return nearest.dist_xy, nearest.dist_yx


def _drop_zero_points(xyz1: torch.Tensor, xyz2: torch.Tensor, ignore_zeros: bool):
    """Point-MAE's ignore_zeros: only for a batch of one, keep points whose coordinates do not
    sum to 0."""
    _check_clouds(xyz1, xyz2)
    if not ignore_zeros or xyz1.shape[0] != 1:
        return xyz1, xyz2
    kept = []
    for name, xyz in (("xyz1", xyz1), ("xyz2", xyz2)):
        cloud = xyz[xyz.sum(dim=2).ne(0)].unsqueeze(0)  # (1, N', 3)
        if cloud.shape[1] == 0:
            raise ValueError(f"{name} has no point whose coordinates sum to a non-zero value "
                             f"({describe(xyz)}); with ignore_zeros=True nothing is left")
        kept.append(cloud)
    return kept[0], kept[1]


class _ChamferModule(torch.nn.Module):
    """The modules' shared option: with ignore_zeros and a batch of one, drop all-zero-sum points."""

    def __init__(self, ignore_zeros: bool = False):
        super().__init__()
        self.ignore_zeros = ignore_zeros


class ChamferDistanceL2(_ChamferModule):
    """mean(dist1) + mean(dist2) over all points of the batch (Point-MAE's ChamferDistanceL2)."""

    def forward(self, xyz1: torch.Tensor, xyz2: torch.Tensor) -> torch.Tensor:
        xyz1, xyz2 = _drop_zero_points(xyz1, xyz2, self.ignore_zeros)
        return chamfer_distance(xyz1, xyz2, distance="squared")


class ChamferDistanceL2_split(_ChamferModule):  # noqa: N801 (the original's name)
    """(mean(dist1), mean(dist2)): the two directions of ChamferDistanceL2 separately."""

    def forward(self, xyz1: torch.Tensor, xyz2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xyz1, xyz2 = _drop_zero_points(xyz1, xyz2, self.ignore_zeros)
        if xyz1.dtype in (torch.float16, torch.bfloat16):  # half losses in float32
            xyz1, xyz2 = xyz1.float(), xyz2.float()
        dist1, dist2 = ChamferFunction.apply(xyz1, xyz2)
        return dist1.mean(), dist2.mean()


class ChamferDistanceL1(_ChamferModule):
    """(mean(sqrt(dist1)) + mean(sqrt(dist2))) / 2 (Point-MAE's ChamferDistanceL1)."""

    def forward(self, xyz1: torch.Tensor, xyz2: torch.Tensor) -> torch.Tensor:
        xyz1, xyz2 = _drop_zero_points(xyz1, xyz2, self.ignore_zeros)
        return chamfer_distance(xyz1, xyz2, distance="euclidean")


__all__ = ["ChamferFunction", "ChamferDistanceL1", "ChamferDistanceL2", "ChamferDistanceL2_split"]
