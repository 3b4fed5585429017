"""Drop-in replacements for the point-cloud extensions that ReCon-era code imports.

Change only the import line; the calls stay the same::

    # from pointnet2_ops import pointnet2_utils
    from recon_fast.compat.pointnet2_ops import pointnet2_utils

    # from pytorch3d.ops import knn_points, knn_gather, sample_farthest_points
    # from pytorch3d.loss import chamfer_distance
    from recon_fast.compat.pytorch3d_ops import (
        chamfer_distance, knn_gather, knn_points, sample_farthest_points)

    # from extensions.chamfer_dist import ChamferDistanceL1, ChamferDistanceL2
    from recon_fast.compat.chamfer_dist import ChamferDistanceL1, ChamferDistanceL2

Each module's docstring lists what it provides and where it differs from the original. All are
thin wrappers over :mod:`recon_fast.ops`, so they run on the CPU and on CUDA, in any float dtype.
"""

from recon_fast.compat import chamfer_dist, pytorch3d_ops
from recon_fast.compat.pointnet2_ops import pointnet2_utils

__all__ = ["pointnet2_utils", "pytorch3d_ops", "chamfer_dist"]
