"""Point ops: typed, validated Python API over ``torch.ops.recon_fast.*``.

Every function accepts float16/bfloat16/float32/float64 (halves accumulate in float32),
non-contiguous inputs and ragged batches (lengths), works under ``torch.compile`` and autograd.
"""

from recon_fast.ops._validation import checks, set_checks
from recon_fast.ops.ball_query import BallQuery, ball_query
from recon_fast.ops.chamfer import Chamfer, chamfer, chamfer_distance
from recon_fast.ops.fps import POINTNET2_MIN_NORM_SQ, fps
from recon_fast.ops.gather_points import gather_points
from recon_fast.ops.group import Group, group
from recon_fast.ops.knn import KNN, knn

__all__ = [
    "fps", "knn", "KNN", "gather_points", "group", "Group", "chamfer", "Chamfer",
    "chamfer_distance", "ball_query", "BallQuery", "set_checks", "checks",
    "POINTNET2_MIN_NORM_SQ",
]
