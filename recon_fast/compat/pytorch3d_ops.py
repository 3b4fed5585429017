"""Drop-in replacements for pytorch3d's point ops and Chamfer loss (pytorch3d 0.7.9).

Swap ``from pytorch3d.ops import knn_points, knn_gather, sample_farthest_points, ball_query``
and ``from pytorch3d.loss import chamfer_distance`` for imports from this module, or call
:func:`recon_fast.compat.install` to make ``pytorch3d.ops`` / ``pytorch3d.loss`` resolve here.
Signatures, defaults, return types, padding values, reductions and the ``ValueError`` cases
follow pytorch3d 0.7.9 (``pytorch3d/ops/knn.py``, ``ops/ball_query.py``,
``ops/sample_farthest_points.py``, ``loss/chamfer.py``). Every ``ValueError`` pytorch3d raises
starts with pytorch3d's own text (so tests matching it keep passing), followed in parentheses
by the argument and the value seen.

Differences, mostly in the direction of accepting more:

- ``knn_points``, ``sample_farthest_points`` and ``ball_query`` take any D >= 1, as pytorch3d
  (D = 3 runs the fastest kernels). ``chamfer_distance`` takes any D >= 1 too: D = 1, 2 are
  zero-padded to 3, which keeps every distance exact, and run the Chamfer kernels; D > 3 runs
  the any-D kNN kernel with K = 1 in both directions, as pytorch3d does for every D.
  ``knn_gather`` gathers features of any width.
- float16/bfloat16/float64 are accepted (pytorch3d: float32; its farthest point sampling
  casts everything to float32). Outputs keep the input dtype, except ``chamfer_distance``,
  which computes and returns half inputs in float32.
- ``knn_points`` ignores ``version`` (one implementation) and always sorts: with
  ``return_sorted=False`` pytorch3d leaves the order of the K neighbours unspecified, so the
  sorted order is one valid answer (the same set of neighbours either way).
- ``ball_query``'s ``skip_points_outside_cube`` is accepted and changes nothing: a point
  outside the cube is outside the ball, and the kernel already stops at K hits.
- Exact distance ties go to the lowest index everywhere (pytorch3d's CUDA kernels may differ).
- The norm=1 gradient at exactly equal coordinates is 0 rather than pytorch3d's -1 sign.
- ``Pointclouds`` inputs to ``chamfer_distance`` are read through their ``points_padded()``,
  ``num_points_per_cloud()`` and ``normals_padded()`` methods; pytorch3d is not imported.
"""

from __future__ import annotations

from collections import namedtuple
from typing import List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from recon_fast.compat._points import as_xyz
from recon_fast.ops import ball_query as ops_ball_query
from recon_fast.ops import chamfer, fps, gather_points, knn
from recon_fast.ops.chamfer import Chamfer
from recon_fast.ops.validate import check_pair, check_points, describe, lengths_or_full

# pytorch3d's message first (its users' tests match it), then ours with the value seen.
_NORM_ERROR = "Support for 1 or 2 norm. (norm must be 1 (L1) or 2 (squared L2), got {norm!r})"

_KNN = namedtuple("KNN", "dists idx knn")
_KNN.__doc__ = ("knn_points result: dists (N, P1, K), idx (N, P1, K) int64, "
                "knn (N, P1, K, D) or None.")


# --------------------------------------------------------------------------------------------
# knn_points / knn_gather
# --------------------------------------------------------------------------------------------

def _check_same_layout(p1, p2) -> None:
    """pytorch3d's own shape checks come first, then ours."""
    for name, t in (("p1", p1), ("p2", p2)):
        if not isinstance(t, torch.Tensor) or t.dim() != 3:
            seen = describe(t) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} must have shape (N, P, D), got {seen}")
    if p1.shape[0] != p2.shape[0]:
        raise ValueError(f"pts1 and pts2 must have the same batch dimension. (p1 and p2 must "
                         f"have the same batch dimension, got shapes {tuple(p1.shape)} and "
                         f"{tuple(p2.shape)})")
    if p1.shape[2] != p2.shape[2]:
        raise ValueError(f"pts1 and pts2 must have the same point dimension. (p1 and p2 must "
                         f"have the same point dimension, got shapes {tuple(p1.shape)} and "
                         f"{tuple(p2.shape)})")


def _pad_last(t: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad the last dimension of `t` up to `size`."""
    missing = size - t.shape[-1]
    if missing <= 0:
        return t
    return torch.cat([t, t.new_zeros((*t.shape[:-1], missing))], dim=-1)


def knn_points(p1: torch.Tensor, p2: torch.Tensor, lengths1: Optional[torch.Tensor] = None,
               lengths2: Optional[torch.Tensor] = None, norm: int = 2, K: int = 1,
               version: int = -1, return_nn: bool = False, return_sorted: bool = True) -> _KNN:
    """The K nearest neighbours in ``p2`` of every point of ``p1``, as pytorch3d's knn_points.

    Args:
        p1: (N, P1, D) query clouds; p2: (N, P2, D) candidate clouds, same dtype, device and
            point dimension D >= 1.
        lengths1, lengths2: optional (N,) valid sizes of the padded clouds.
        norm: 2 for squared Euclidean distances, 1 for L1 distances.
        K: number of neighbours, K >= 1; K may exceed P2.
        version: accepted for compatibility (-1..3) and ignored.
        return_nn: also return the neighbour coordinates via :func:`knn_gather`.
        return_sorted: accepted for compatibility; neighbours are always sorted.

    Returns:
        KNN(dists, idx, knn): dists (N, P1, K) differentiable w.r.t. p1 and p2; idx (N, P1, K)
        int64; knn (N, P1, K, D) or None. Slots with k >= lengths2[n] and rows with
        i >= lengths1[n] hold distance 0 and index 0 (pytorch3d's padding, not -1).
    """
    _check_same_layout(p1, p2)
    if norm not in (1, 2):
        raise ValueError(_NORM_ERROR.format(norm=norm))
    check_points(p1, "p1", any_dim=True)
    check_points(p2, "p2", any_dim=True)
    check_pair(p1, "p1", p2, "p2")
    K = int(K) if isinstance(K, np.integer) else K
    if isinstance(K, bool) or not isinstance(K, int) or K < 1:
        raise ValueError(f"K must be an int >= 1, got {K!r}")
    if version not in (-1, 0, 1, 2, 3):
        raise ValueError(f"version must be one of -1, 0, 1, 2, 3, got {version!r}")
    lengths1 = lengths_or_full(lengths1, "lengths1", p1, "p1")
    lengths2 = lengths_or_full(lengths2, "lengths2", p2, "p2")
    N, P1, P2 = p1.shape[0], p1.shape[1], p2.shape[1]
    if P2 == 0:
        # No candidates at all: zero distances that still carry a (zero) gradient to p1.
        dists = (p1.sum(2, keepdim=True) * 0).expand(N, P1, K).contiguous()
        idx = torch.zeros(N, P1, K, dtype=torch.int64, device=p1.device)
    else:
        found = knn(p1, p2, min(K, P2), lengths1, lengths2, norm=norm)
        dists = _pad_last(found.dists, K)  # (N, P1, K)
        idx = _pad_last(found.idx, K).clamp_min(0)  # pytorch3d pads indices with 0
    nn = knn_gather(p2, idx, lengths2) if return_nn else None
    return _KNN(dists=dists, idx=idx, knn=nn)


def knn_gather(x: torch.Tensor, idx: torch.Tensor,
               lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``out[n, l, k] = x[n, idx[n, l, k]]``, zeroed where ``k >= lengths[n]``, as pytorch3d's.

    Args:
        x: (N, M, U) features of any width U.
        idx: (N, L, K) int64/int32 indices into M, e.g. from :func:`knn_points`.
        lengths: optional (N,) valid sizes of the clouds in ``x``.

    Returns:
        (N, L, K, U) in the dtype of ``x``, differentiable w.r.t. ``x``.
    """
    check_points(x, "x", channels=None)
    if not isinstance(idx, torch.Tensor) or idx.dim() != 3:
        seen = describe(idx) if isinstance(idx, torch.Tensor) else type(idx).__name__
        raise ValueError(f"idx must have shape (N, L, K), got {seen}")
    if idx.shape[0] != x.shape[0]:
        raise ValueError(f"x and idx must have same batch dimension. (got x {describe(x)} "
                         f"and idx {describe(idx)})")
    lengths = lengths_or_full(lengths, "lengths", x, "x")
    N, L, K = idx.shape
    if x.shape[1] == 0:  # nothing to gather: every slot is beyond the (zero) lengths
        return x.new_zeros((N, L, K, x.shape[2]))
    out = gather_points(x, idx)  # (N, L, K, U)
    beyond = torch.arange(K, device=x.device)[None, :] >= lengths[:, None]  # (N, K)
    return out.masked_fill(beyond[:, None, :, None], 0)


# --------------------------------------------------------------------------------------------
# ball_query
# --------------------------------------------------------------------------------------------

def ball_query(p1: torch.Tensor, p2: torch.Tensor, lengths1: Optional[torch.Tensor] = None,
               lengths2: Optional[torch.Tensor] = None, K: int = 500, radius: float = 0.2,
               return_nn: bool = True, skip_points_outside_cube: bool = False) -> _KNN:
    """The first K points of ``p2`` (in index order) within ``radius`` of each point of ``p1``,
    as pytorch3d's ball_query.

    Args:
        p1: (N, P1, D) ball centres; p2: (N, P2, D) candidates, any D, same dtype and device.
        lengths1, lengths2: optional (N,) valid sizes of the padded clouds.
        K: the most neighbours per centre; radius: a point is inside when its squared
            distance < radius^2.
        return_nn: also return the neighbour coordinates.
        skip_points_outside_cube: accepted for compatibility; the result is the same.

    Returns:
        KNN(dists, idx, knn): dists (N, P1, K) squared distances, differentiable w.r.t. p1 and
        p2; idx (N, P1, K) int64; knn (N, P1, K, D) or None. Unused slots and rows with
        i >= lengths1[n] hold distance 0, index -1 and zero coordinates.
    """
    _check_same_layout(p1, p2)
    K = int(K) if isinstance(K, np.integer) else K
    if isinstance(K, bool) or not isinstance(K, int) or K < 1:
        raise ValueError(f"K must be an int >= 1, got {K!r}")
    found = ops_ball_query(p1, p2, K, radius, lengths1, lengths2, return_nn=return_nn)
    return _KNN(dists=found.dists, idx=found.idx, knn=found.knn)


# --------------------------------------------------------------------------------------------
# sample_farthest_points
# --------------------------------------------------------------------------------------------

def _per_cloud_counts(K, N: int, device: torch.device) -> Tuple[torch.Tensor, int]:
    """K as an int (numpy integers too), list or (N,) tensor -> ((N,) int64 counts, max count)."""
    K = int(K) if isinstance(K, np.integer) else K
    if isinstance(K, bool):
        raise ValueError(f"K must be an int, a list or an (N,) tensor, got {K!r}")
    if isinstance(K, int):
        counts = torch.full((N,), K, dtype=torch.int64, device=device)
    elif isinstance(K, (list, tuple, torch.Tensor)):
        counts = torch.as_tensor(K, device=device)
        if counts.dtype.is_floating_point or counts.dtype == torch.bool:
            raise ValueError(f"K must hold integers, got {describe(counts)}")
        counts = counts.to(torch.int64)
    else:
        raise ValueError(f"K must be an int, a list or an (N,) tensor, got {type(K).__name__}")
    if counts.dim() != 1 or counts.shape[0] != N:
        raise ValueError(f"K and points must have the same batch dimension (N = {N}, got K "
                         f"with shape {tuple(counts.shape)})")
    if (isinstance(K, int) and K < 0) or (N > 0 and int(counts.min()) < 0):
        raise ValueError(f"K must be >= 0, got {K if isinstance(K, int) else counts.tolist()}")
    max_count = K if isinstance(K, int) else (int(counts.max()) if N > 0 else 0)
    return counts, max_count


def _start_indices(lengths: torch.Tensor, P: int, random: bool, constant_length: bool):
    """First sample of each cloud, drawn from the RNG exactly as pytorch3d draws it."""
    N, device = lengths.shape[0], lengths.device
    if not random or P == 0:
        return torch.zeros(N, dtype=torch.int64, device=device)
    if constant_length:
        return torch.randint(high=P, size=(N,), device=device)
    return (lengths * torch.rand(lengths.size(), device=device)).to(torch.int64)


def sample_farthest_points(points: torch.Tensor, lengths: Optional[torch.Tensor] = None,
                           K: Union[int, List, torch.Tensor] = 50,
                           random_start_point: bool = False
                           ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Farthest point sampling with pytorch3d's padding rules.

    Args:
        points: (N, P, D) clouds, any D >= 1.
        lengths: optional (N,) valid sizes of the padded clouds.
        K: samples per cloud: an int (may exceed P), or a list / (N,) tensor of per-cloud counts.
        random_start_point: start each cloud at a random valid point (drawn from torch's RNG as
            pytorch3d does) instead of index 0.

    Returns:
        selected_points: (N, max K, D), zero rows where the index is -1; differentiable
            w.r.t. ``points``; same dtype as ``points``.
        selected_indices: (N, max K) int64. Cloud n holds min(K[n], lengths[n]) samples, each
            maximising the squared distance to those before (ties to the lowest index), then -1.
            As in pytorch3d's kernels, slot 0 always holds the start index, even when K[n] == 0
            or the cloud is empty.
    """
    if not isinstance(points, torch.Tensor) or points.dim() != 3:
        seen = describe(points) if isinstance(points, torch.Tensor) else type(points).__name__
        raise ValueError(f"points must have shape (N, P, D), got {seen}")
    N, P, D = points.shape
    check_points(points, "points", any_dim=True)
    constant_length = lengths is None
    lengths = None if lengths is None else torch.as_tensor(lengths)
    if lengths is not None and lengths.shape != (N,):
        seen = describe(lengths)
        raise ValueError(f"points and lengths must have same batch dimension. (lengths must "
                         f"have shape (N,) = ({N},), got {seen})")
    if lengths is not None and N > 0 and int(lengths.max()) > P:
        raise ValueError(f"A value in lengths was too large. (lengths must lie in [0, {P}], "
                         f"the padded size of points; got {lengths.tolist()})")
    lengths = lengths_or_full(lengths, "lengths", points, "points")
    counts, max_count = _per_cloud_counts(K, N, points.device)
    if P == 0 and max_count > 0:
        raise ValueError(f"points holds no points (P = 0) to sample K = {max_count} from, "
                         f"got {describe(points)}")
    start = _start_indices(lengths, P, random_start_point, constant_length)

    idx = fps(points, min(max_count, P), lengths, start_idx=start)  # (N, min(max K, P))
    idx = torch.cat([idx, idx.new_full((N, max_count - idx.shape[1]), -1)], dim=1)
    slot = torch.arange(max_count, device=points.device)[None, :]
    idx = idx.masked_fill(slot >= counts[:, None], -1)  # (N, max K)
    if max_count > 0:
        idx[:, 0] = start
    return gather_points(points, idx), idx


# --------------------------------------------------------------------------------------------
# chamfer_distance
# --------------------------------------------------------------------------------------------

def _check_reductions(batch_reduction, point_reduction) -> None:
    if batch_reduction is not None and batch_reduction not in ("mean", "sum"):
        raise ValueError(f'batch_reduction must be one of ["mean", "sum"] or None '
                         f'(got {batch_reduction!r})')
    if point_reduction is not None and point_reduction not in ("mean", "sum", "max"):
        raise ValueError(f'point_reduction must be one of ["mean", "sum", "max"] or None '
                         f'(got {point_reduction!r})')
    if point_reduction is None and batch_reduction is not None:
        raise ValueError(f"Batch reduction must be None if point_reduction is None (the "
                         f"batch_reduction must be None if point_reduction is None, got "
                         f"{batch_reduction!r})")


def _cloud_input(points, lengths, normals, name: str):
    """A tensor or a Pointclouds-like object -> (padded points, lengths, normals or None)."""
    if hasattr(points, "points_padded") and not isinstance(points, torch.Tensor):
        return points.points_padded(), points.num_points_per_cloud(), points.normals_padded()
    if not isinstance(points, torch.Tensor):
        raise ValueError(f"The input pointclouds should be either Pointclouds objects or "
                         f"torch.Tensor of shape (minibatch, num_points, 3). ({name} must be a "
                         f"Pointclouds object or a torch.Tensor, got {type(points).__name__})")
    if points.dim() != 3:
        raise ValueError(f"Expected points to be of shape (N, P, D) ({name} must have shape "
                         f"(N, P, D), got {describe(points)})")
    if lengths is not None:
        lengths = torch.as_tensor(lengths)
        if lengths.dim() != 1 or lengths.shape[0] != points.shape[0]:
            raise ValueError(f"Expected lengths to be of shape (N,) ({name}_lengths must have "
                             f"shape (N,) = ({points.shape[0]},), got {describe(lengths)})")
        if lengths.numel() > 0 and int(lengths.max()) > points.shape[1]:
            raise ValueError(f"A length value was too long ({name}_lengths must lie in "
                             f"[0, {points.shape[1]}], got {lengths.tolist()})")
    if normals is not None and (not isinstance(normals, torch.Tensor) or normals.dim() != 3):
        seen = describe(normals) if isinstance(normals, torch.Tensor) else type(normals).__name__
        raise ValueError(f"Expected normals to be of shape (N, P, 3 ({name}_normals must have "
                         f"shape (N, P, 3), got {seen})")
    return points, lengths, normals


def _check_normals(normals, points, name: str) -> None:
    if normals is not None and normals.shape != points.shape:
        raise ValueError(f"{name}_normals must have the shape of {name} {tuple(points.shape)}, "
                         f"got {describe(normals)}")
    if normals is not None and not normals.dtype.is_floating_point:
        raise ValueError(f"{name}_normals must be a float tensor, got {describe(normals)}")


def _check_weights(weights, N: int, device: torch.device) -> None:
    if weights is None:
        return
    if not isinstance(weights, torch.Tensor) or weights.dim() < 1 or weights.shape[0] != N \
            or weights.numel() != N:
        seen = describe(weights) if isinstance(weights, torch.Tensor) else type(weights).__name__
        raise ValueError(f"weights must be of shape (N,). (N = {N}, got {seen})")
    if weights.device != device:
        raise ValueError(f"weights is on {weights.device} but x is on {device}")
    if not bool((weights >= 0).all()):
        raise ValueError(f"weights cannot be negative. (got {weights.tolist()})")


def _zero_weight_terms(points: torch.Tensor, weights: torch.Tensor):
    """pytorch3d's early return for all-zero weights: (N, N) zeros for the distance and the
    normals term alike, still attached to the graph of `points` and `weights`."""
    N = points.shape[0]
    zeros = (points.sum((1, 2)) * weights.view(N, 1)) * 0.0  # (N, N)
    return zeros, zeros


def _one_direction(dist, idx, lengths, normals, other_normals, weights, point_reduction,
                   abs_cosine: bool):
    """Distances (N, P) from one cloud to its nearest neighbours in the other -> this
    direction's (distance term, normals term or None), reduced over points."""
    N, P = dist.shape
    padded = torch.arange(P, device=dist.device)[None, :] >= lengths[:, None]  # (N, P)
    cham = dist.masked_fill(padded, 0)
    cham_norm = None
    if normals is not None and other_normals is not None:
        nearest_normals = gather_points(other_normals, idx)  # (N, P, 3); no neighbour -> 0
        cosine = F.cosine_similarity(normals, nearest_normals, dim=2, eps=1e-6)
        cham_norm = 1 - (cosine.abs() if abs_cosine else cosine)
        cham_norm = cham_norm.masked_fill(padded, 0)
    if weights is not None:
        w = weights.view(N, 1).to(cham.dtype)
        cham = cham * w
        cham_norm = None if cham_norm is None else cham_norm * w
    if point_reduction == "max":
        return cham.max(1).values, None  # (N,)
    if point_reduction is None:
        return cham, cham_norm
    cham = cham.sum(1)  # (N,)
    cham_norm = None if cham_norm is None else cham_norm.sum(1)
    if point_reduction == "mean":
        count = lengths.clamp(min=1)
        cham = cham / count
        cham_norm = None if cham_norm is None else cham_norm / count
    return cham, cham_norm


def _combine(x_terms, y_terms, point_reduction):
    """Both directions -> (loss, loss_normals) before the batch reduction."""
    (cham_x, norm_x), (cham_y, norm_y) = x_terms, y_terms
    if point_reduction == "max":
        return torch.maximum(cham_x, cham_y), None
    if point_reduction is None:
        return (cham_x, cham_y), (None if norm_x is None else (norm_x, norm_y))
    return cham_x + cham_y, (None if norm_x is None else norm_x + norm_y)


def _batch_reduce(loss, loss_normals, weights, batch_reduction):
    if batch_reduction is None:
        return loss, loss_normals
    N = loss.shape[0]
    loss = loss.sum()
    loss_normals = None if loss_normals is None else loss_normals.sum()
    if batch_reduction == "mean":
        if weights is None:
            div = max(N, 1)
        elif bool(weights.sum() == 0):
            div = 1
        else:
            div = weights.sum().to(loss.dtype)
        loss = loss / div
        loss_normals = None if loss_normals is None else loss_normals / div
    return loss, loss_normals


def _upcast_half(t):
    if isinstance(t, torch.Tensor) and t.dtype in (torch.float16, torch.bfloat16):
        return t.float()
    return t


def _nearest_both_ways(x, y, x_lengths, y_lengths, norm: int):
    """Each point's nearest neighbour in the other cloud, both ways (dist_xy, dist_yx, idx_xy,
    idx_yx). D <= 3 runs the Chamfer kernels on xyz (zero-padded, exact); D > 3 runs the any-D
    kNN kernel with K = 1 each way, which gives the same distances, indices and gradients."""
    if x.shape[2] <= 3:
        return chamfer(as_xyz(x, "x"), as_xyz(y, "y"), x_lengths, y_lengths, norm=norm)
    if x.shape[1] == 0 or y.shape[1] == 0:
        # No pairs at all: every term is a padded 0 whatever the coordinates.
        return chamfer(x[..., :3], y[..., :3], x_lengths, y_lengths, norm=norm)
    xy = knn(x, y, 1, x_lengths, y_lengths, norm=norm)
    yx = knn(y, x, 1, y_lengths, x_lengths, norm=norm)
    return Chamfer(xy.dists[..., 0], yx.dists[..., 0], xy.idx[..., 0], yx.idx[..., 0])


def chamfer_distance(x, y, x_lengths=None, y_lengths=None, x_normals=None, y_normals=None,
                     weights=None, batch_reduction: Union[str, None] = "mean",
                     point_reduction: Union[str, None] = "mean", norm: int = 2,
                     single_directional: bool = False, abs_cosine: bool = True):
    """Chamfer distance between batches of clouds, as pytorch3d 0.7.9's ``chamfer_distance``.

    Each point's term is the distance to its nearest neighbour in the other cloud: squared
    Euclidean for ``norm=2``, L1 (sum of absolute differences) for ``norm=1``. With normals,
    each point also contributes ``1 - cos`` (``1 - |cos|`` with ``abs_cosine``) between its
    normal and its neighbour's.

    Args:
        x: (N, P1, D) tensor or Pointclouds; y: (N, P2, D) tensor or Pointclouds; any D >= 1.
        x_lengths, y_lengths: optional (N,) valid sizes of padded clouds.
        x_normals, y_normals: optional (N, P1, 3) / (N, P2, 3); used only if both are given.
        weights: optional (N,) non-negative per-cloud weights.
        batch_reduction: "mean" (divided by N, or by weights.sum() when weighted), "sum", None.
        point_reduction: "mean" (divided by the cloud's length), "sum", "max" (Hausdorff, no
            normals), or None for per-point terms.
        norm: 1 or 2.
        single_directional: only the x -> y term.
        abs_cosine: ignore normal orientation.

    Returns:
        (loss, loss_normals); loss_normals is None without normals. With point_reduction None
        both are (x term (N, P1), y term (N, P2)) tuples (just the x term if single
        directional). All-zero weights give zeros shaped as pytorch3d gives them ((N, N) before
        the batch reduction), and then loss_normals is zeros rather than None. An empty cloud
        (P = 0, or a length of 0) contributes 0, as in pytorch3d (its point mean divides by the
        length clamped to 1, its batch mean by max(N, 1)), never NaN; ``recon_fast.ops.
        chamfer_distance`` refuses empty clouds instead.

    Raises:
        ValueError: unknown reductions, batch_reduction without point_reduction, norm not in
            (1, 2), normals with "max", malformed shapes or lengths, D = 0, bad weights.
    """
    _check_reductions(batch_reduction, point_reduction)
    if norm not in (1, 2):
        raise ValueError(_NORM_ERROR.format(norm=norm))
    if point_reduction == "max" and (x_normals is not None or y_normals is not None):
        raise ValueError('Normals must be None if point_reduction is "max" (normals must be '
                         'None for the Hausdorff reduction)')
    x, x_lengths, x_normals = _cloud_input(x, x_lengths, x_normals, "x")
    y, y_lengths, y_normals = _cloud_input(y, y_lengths, y_normals, "y")
    N = x.shape[0]
    if y.shape[0] != N or y.shape[2] != x.shape[2]:
        raise ValueError(f"y does not have the correct shape. (x {describe(x)}, "
                         f"y {describe(y)})")
    _check_normals(x_normals, x, "x")
    _check_normals(y_normals, y, "y")
    if point_reduction == "max" and (x.shape[1] == 0 or y.shape[1] == 0):
        raise ValueError(f'point_reduction "max" needs non-empty clouds, got x {describe(x)}, '
                         f'y {describe(y)}')
    _check_weights(weights, N, x.device)
    x, y = _upcast_half(x), _upcast_half(y)
    x_lengths = lengths_or_full(x_lengths, "x_lengths", x, "x")
    y_lengths = lengths_or_full(y_lengths, "y_lengths", y, "y")

    if weights is not None and bool(weights.sum() == 0):
        x_terms, y_terms = _zero_weight_terms(x, weights), _zero_weight_terms(y, weights)
    else:
        if x_normals is not None and y_normals is not None:
            acc = torch.promote_types(x.dtype,
                                      torch.promote_types(x_normals.dtype, y_normals.dtype))
            x_normals, y_normals = x_normals.to(acc), y_normals.to(acc)
        nearest = _nearest_both_ways(x, y, x_lengths, y_lengths, norm)
        x_terms = _one_direction(nearest.dist_xy, nearest.idx_xy, x_lengths, x_normals,
                                 y_normals, weights, point_reduction, abs_cosine)
        y_terms = _one_direction(nearest.dist_yx, nearest.idx_yx, y_lengths, y_normals,
                                 x_normals, weights, point_reduction, abs_cosine)
    if single_directional:
        loss, loss_normals = x_terms
    else:
        loss, loss_normals = _combine(x_terms, y_terms, point_reduction)
    return _batch_reduce(loss, loss_normals, weights, batch_reduction)


__all__ = ["knn_points", "knn_gather", "ball_query", "sample_farthest_points",
           "chamfer_distance"]
