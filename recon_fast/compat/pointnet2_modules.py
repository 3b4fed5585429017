"""Drop-in replacement for ``pointnet2_ops.pointnet2_modules`` (erikwijmans/Pointnet2_PyTorch).

The PointNet++ building blocks, over :mod:`recon_fast.compat.pointnet2_ops`' ``pointnet2_utils``:

- ``build_shared_mlp(mlp_spec, bn=True)``: 1x1 Conv2d (+ BatchNorm2d) + ReLU per layer.
- ``PointnetSAModuleMSG(npoint, radii, nsamples, mlps, bn=True, use_xyz=True)``: set abstraction
  with multi-scale grouping: FPS centres, one ball query + shared MLP + max-pool per scale.
- ``PointnetSAModule(mlp, npoint=None, radius=None, nsample=None, bn=True, use_xyz=True)``: one
  scale; ``npoint=None`` groups all points into one (``GroupAll``).
- ``PointnetFPModule(mlp, bn=True)``: feature propagation by inverse-distance interpolation of
  the three nearest known points, concatenated with the skip features, then a shared MLP.

Submodule and parameter names (``groupers``, ``mlps``, ``mlp``, the layers' order) are the
original's, so its state dicts load unchanged. Differences, and why:

- ``PointnetSAModuleMSG`` does not add 3 to the caller's ``mlps`` lists in place (the original
  mutates them, so building two modules from one spec list changed the second); the layer sizes
  are the same.
- ``PointnetFPModule`` with ``known=None`` broadcasts ``known_feats`` (B, C, 1) over the n
  unknown points; the original's ``expand`` adds a ``torch.Size`` to a list there and raises
  TypeError.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from recon_fast.compat.pointnet2_ops import pointnet2_utils


def build_shared_mlp(mlp_spec: List[int], bn: bool = True) -> nn.Sequential:
    """Per-point MLP as 1x1 convolutions over (B, C, npoint, nsample) maps."""
    layers = []
    for c_in, c_out in zip(mlp_spec[:-1], mlp_spec[1:]):
        layers.append(nn.Conv2d(c_in, c_out, kernel_size=1, bias=not bn))
        if bn:
            layers.append(nn.BatchNorm2d(c_out))
        layers.append(nn.ReLU(True))
    return nn.Sequential(*layers)


class _PointnetSAModuleBase(nn.Module):
    def __init__(self):
        super().__init__()
        self.npoint = None
        self.groupers = None
        self.mlps = None

    def forward(self, xyz: torch.Tensor,
                features: Optional[torch.Tensor]) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
        """xyz (B, N, 3), features (B, C, N) or None -> new_xyz (B, npoint, 3) (None without
        npoint), new_features (B, sum of the scales' last widths, npoint)."""
        new_xyz = None
        if self.npoint is not None:
            centres = pointnet2_utils.furthest_point_sample(xyz, self.npoint)  # (B, npoint)
            new_xyz = pointnet2_utils.gather_operation(xyz.transpose(1, 2).contiguous(), centres)
            new_xyz = new_xyz.transpose(1, 2).contiguous()  # (B, npoint, 3)
        scales = []
        for grouper, mlp in zip(self.groupers, self.mlps):
            grouped = grouper(xyz, new_xyz, features)  # (B, C + 3, npoint, nsample)
            grouped = mlp(grouped)  # (B, mlp[-1], npoint, nsample)
            pooled = F.max_pool2d(grouped, kernel_size=[1, grouped.size(3)])  # (..., npoint, 1)
            scales.append(pooled.squeeze(-1))  # (B, mlp[-1], npoint)
        return new_xyz, torch.cat(scales, dim=1)


class PointnetSAModuleMSG(_PointnetSAModuleBase):
    """Set abstraction with multi-scale grouping (one ball radius and MLP per scale)."""

    def __init__(self, npoint, radii, nsamples, mlps, bn=True, use_xyz=True):
        super().__init__()
        if not len(radii) == len(nsamples) == len(mlps):
            raise ValueError(f"radii, nsamples and mlps must have one entry per scale, got "
                             f"{len(radii)}, {len(nsamples)} and {len(mlps)}")
        self.npoint = npoint
        self.groupers = nn.ModuleList()
        self.mlps = nn.ModuleList()
        for radius, nsample, spec in zip(radii, nsamples, mlps):
            self.groupers.append(
                pointnet2_utils.QueryAndGroup(radius, nsample, use_xyz=use_xyz)
                if npoint is not None else pointnet2_utils.GroupAll(use_xyz))
            spec = list(spec)
            if use_xyz:
                spec[0] += 3  # the centred coordinates are grouped with the features
            self.mlps.append(build_shared_mlp(spec, bn))


class PointnetSAModule(PointnetSAModuleMSG):
    """Set abstraction at one scale; ``npoint=None`` pools the whole cloud."""

    def __init__(self, mlp, npoint=None, radius=None, nsample=None, bn=True, use_xyz=True):
        super().__init__(mlps=[mlp], npoint=npoint, radii=[radius], nsamples=[nsample], bn=bn,
                         use_xyz=use_xyz)


class PointnetFPModule(nn.Module):
    """Feature propagation from `known` points to `unknown` ones."""

    def __init__(self, mlp, bn=True):
        super().__init__()
        self.mlp = build_shared_mlp(mlp, bn=bn)

    def forward(self, unknown, known, unknow_feats, known_feats):
        """unknown (B, n, 3), known (B, m, 3) or None, unknow_feats (B, C1, n) or None,
        known_feats (B, C2, m) -> (B, mlp[-1], n)."""
        if known is not None:
            dist, idx = pointnet2_utils.three_nn(unknown, known)  # (B, n, 3)
            dist_recip = 1.0 / (dist + 1e-8)
            weight = dist_recip / torch.sum(dist_recip, dim=2, keepdim=True)
            interpolated = pointnet2_utils.three_interpolate(known_feats, idx, weight)
        else:
            interpolated = known_feats.expand(*known_feats.shape[:2], unknown.size(1))
        if unknow_feats is not None:
            interpolated = torch.cat([interpolated, unknow_feats], dim=1)  # (B, C2 + C1, n)
        return self.mlp(interpolated.unsqueeze(-1)).squeeze(-1)


__all__ = ["build_shared_mlp", "PointnetSAModuleMSG", "PointnetSAModule", "PointnetFPModule"]
