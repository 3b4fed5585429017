"""Drop-in replacement for ``torch_cluster``'s point ops (rusty1s/pytorch_cluster 1.6).

Swap ``from torch_cluster import fps, knn, knn_graph, radius, radius_graph`` for imports from
this module, or call :func:`recon_fast.compat.install` to make ``import torch_cluster`` resolve
here. Points are flat (N, F) with a sorted ``batch`` vector (or ``ptr`` offsets for ``fps``);
results are global indices and (2, E) edge lists, as in torch_cluster:

- ``fps(src, batch=None, ratio=0.5, random_start=True, batch_size=None, ptr=None)`` -> indices of
  ``ceil(ratio * n_b)`` samples per example, concatenated. ``ratio`` may be a float or a
  per-example tensor. A random start draws ``(rand(B) * n_b).long()`` from torch's RNG, as the
  CUDA kernel does.
- ``knn(x, y, k, batch_x=None, batch_y=None, cosine=False, num_workers=1, batch_size=None)`` ->
  edge_index (2, E): row ``[0]`` indexes ``y``, col ``[1]`` the neighbour in ``x``; each y point
  gets min(k, n_b) neighbours sorted by distance.
- ``knn_graph(x, k, batch=None, loop=False, flow="source_to_target", cosine=False,
  num_workers=1, batch_size=None)``: kNN of x in itself; ``"source_to_target"`` gives
  (neighbour, centre) pairs; without ``loop`` the self edge is dropped from k + 1 neighbours.
- ``radius(x, y, r, batch_x=None, batch_y=None, max_num_neighbors=32, num_workers=1,
  batch_size=None, ignore_same_index=False)`` -> (2, E): for each y point the first
  ``max_num_neighbors`` x points (in index order) with squared distance < r^2.
- ``radius_graph(x, r, batch=None, loop=False, max_num_neighbors=32, flow="source_to_target",
  num_workers=1, batch_size=None)``.

Where it differs, and why:

- Points may have any number F >= 1 of coordinates, as in torch_cluster (F = 3 runs the
  fastest kNN/FPS kernels).
- Ties go to the lowest index (torch_cluster's kd-tree and CUDA kernels may order them
  otherwise). ``radius`` keeps the first neighbours in index order, like torch_cluster's CUDA
  kernel; its CPU kd-tree returns them in tree order (the docstring says "picked randomly").
  Its radius test is ``d^2 < r'^2`` with ``r`` first rounded to the float dtype (torch_cluster
  rounds ``r^2`` instead), which can differ only for a point exactly on the sphere.
- ``cosine=True`` ranks by the Euclidean distance of the unit-normalised vectors, which orders
  neighbours as the cosine distance does (``|a - b|^2 = 2 (1 - cos)`` for unit vectors).
- ``num_workers`` is accepted and ignored: the kernels use every thread torch allows.
- ``random_start`` draws from torch's RNG on every device (torch_cluster's CPU path uses C
  ``rand()``), so seeded runs repeat.
- Bad arguments raise ``ValueError`` naming the argument (torch_cluster asserts); an unsorted
  ``batch`` is rejected rather than giving wrong groups.
- Outputs are int64 on the points' device; distances are accumulated in float32 for halves.
"""

from __future__ import annotations

from typing import List, Optional, Union

import torch
import torch.nn.functional as F

from recon_fast.compat._points import batch_pointers, pad_flat, pointers_from_ptr
from recon_fast.ops import ball_query, fps as ops_fps, knn as ops_knn
from recon_fast.ops.validate import FLOAT_DTYPES, accumulation_dtype, check_count, describe

_FLOWS = ("source_to_target", "target_to_source")


def _flat_points(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    x = x.view(-1, 1) if x.dim() == 1 else x
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape (N, F), got {describe(x)}")
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be float16, bfloat16, float32 or float64, got {describe(x)}")
    return x


def _check_flow(flow) -> None:
    if flow not in _FLOWS:
        raise ValueError(f"flow must be 'source_to_target' or 'target_to_source', got {flow!r}")


def _paired_batches(x, y, batch_x, batch_y, batch_size):
    """CSR pointers of x and y over the same number of examples."""
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same number of features, got {describe(x)} "
                         f"and {describe(y)}")
    if x.device != y.device or x.dtype != y.dtype:
        raise ValueError(f"x and y must share dtype and device, got {describe(x)} and "
                         f"{describe(y)}")
    if batch_size is None and (batch_x is None) != (batch_y is None):
        # torch_cluster: one batch vector alone describes a single example unless it says more.
        given = batch_x if batch_x is not None else batch_y
        if given.numel() > 0 and int(given.max()) > 0:
            raise ValueError("batch_x and batch_y must both be given when there is more than "
                             "one example")
    size = batch_size
    if size is None:
        size = 1
        for b in (batch_x, batch_y):
            if isinstance(b, torch.Tensor) and b.numel() > 0:
                size = max(size, int(b.max()) + 1)
    ptr_x = batch_pointers(batch_x, x.shape[0], size, "batch_x", x.device)
    ptr_y = batch_pointers(batch_y, y.shape[0], size, "batch_y", x.device)
    return ptr_x, ptr_y


def _edges(found_idx: torch.Tensor, ptr_x: torch.Tensor, ptr_y: torch.Tensor,
           lengths_y: torch.Tensor) -> torch.Tensor:
    """Padded neighbour indices (B, P_y, k) with -1 padding -> (2, E) global [y, x] edges in
    the order of y, then slot."""
    B, P_y, k = found_idx.shape
    slot = torch.arange(P_y, device=found_idx.device)
    y_global = (ptr_y[:-1, None] + slot[None, :])[..., None].expand(B, P_y, k)  # (B, P_y, k)
    x_global = found_idx + ptr_x[:-1, None, None]
    valid = (found_idx >= 0) & (slot[None, :, None] < lengths_y[:, None, None])
    return torch.stack([y_global[valid], x_global[valid]], dim=0)


def _unit(t: torch.Tensor) -> torch.Tensor:
    acc = accumulation_dtype(t.dtype)
    return F.normalize(t.to(acc), dim=-1).to(t.dtype)


def knn(x: torch.Tensor, y: torch.Tensor, k: int, batch_x: Optional[torch.Tensor] = None,
        batch_y: Optional[torch.Tensor] = None, cosine: bool = False, num_workers: int = 1,
        batch_size: Optional[int] = None) -> torch.Tensor:
    """For each point of ``y``, its ``k`` nearest points of ``x`` in the same example.

    Returns:
        (2, E) int64: ``[0]`` indexes ``y``, ``[1]`` the neighbour in ``x``; y points in order,
        each one's neighbours nearest first (ties to the lowest index).
    """
    x, y = _flat_points(x, "x"), _flat_points(y, "y")
    k = check_count(k, "k", 1, 2**31 - 1, "neighbours per point")
    if x.numel() == 0 or y.numel() == 0:
        return torch.empty(2, 0, dtype=torch.long, device=x.device)
    ptr_x, ptr_y = _paired_batches(x, y, batch_x, batch_y, batch_size)
    if cosine:
        x, y = _unit(x), _unit(y)
    px, lx, _ = pad_flat(x, ptr_x)
    py, ly, _ = pad_flat(y, ptr_y)
    if px.shape[1] == 0:
        return torch.empty(2, 0, dtype=torch.long, device=x.device)
    found = ops_knn(py, px, min(k, px.shape[1]), ly, lx)
    return _edges(found.idx, ptr_x, ptr_y, ly)


def knn_graph(x: torch.Tensor, k: int, batch: Optional[torch.Tensor] = None, loop: bool = False,
              flow: str = "source_to_target", cosine: bool = False, num_workers: int = 1,
              batch_size: Optional[int] = None) -> torch.Tensor:
    """Edges from every point to its ``k`` nearest points of the same example.

    Returns:
        (2, E) int64 edge_index; with ``flow="source_to_target"`` ``[0]`` is the neighbour and
        ``[1]`` the centre. Without ``loop``, k + 1 neighbours are found and self edges dropped.
    """
    _check_flow(flow)
    k = check_count(k, "k", 1, 2**31 - 1, "neighbours per point")
    edge_index = knn(x, x, k if loop else k + 1, batch, batch, cosine, num_workers, batch_size)
    if flow == "source_to_target":
        row, col = edge_index[1], edge_index[0]
    else:
        row, col = edge_index[0], edge_index[1]
    if not loop:
        keep = row != col
        row, col = row[keep], col[keep]
    return torch.stack([row, col], dim=0)


def radius(x: torch.Tensor, y: torch.Tensor, r: float, batch_x: Optional[torch.Tensor] = None,
           batch_y: Optional[torch.Tensor] = None, max_num_neighbors: int = 32,
           num_workers: int = 1, batch_size: Optional[int] = None,
           ignore_same_index: bool = False) -> torch.Tensor:
    """For each point of ``y``, the first ``max_num_neighbors`` points of ``x`` (index order)
    within distance ``r`` (squared distance < r^2), in the same example.

    Returns:
        (2, E) int64: ``[0]`` indexes ``y``, ``[1]`` the point of ``x``.
        ``ignore_same_index`` skips the x point whose global index equals the y point's.
    """
    x, y = _flat_points(x, "x"), _flat_points(y, "y")
    limit = check_count(max_num_neighbors, "max_num_neighbors", 1, 2**31 - 1,
                        "neighbours kept per point")
    if x.numel() == 0 or y.numel() == 0:
        return torch.empty(2, 0, dtype=torch.long, device=x.device)
    ptr_x, ptr_y = _paired_batches(x, y, batch_x, batch_y, batch_size)
    px, lx, _ = pad_flat(x, ptr_x)
    py, ly, _ = pad_flat(y, ptr_y)
    # One more slot when the point itself may be among the first hits and is then dropped.
    found = ball_query(py, px, limit + 1 if ignore_same_index else limit, r, ly, lx)
    edges = _edges(found.idx, ptr_x, ptr_y, ly)
    if not ignore_same_index:
        return edges
    keep = edges[0] != edges[1]
    edges = edges[:, keep]
    # Keep at most `limit` per y point: rank each edge within its y point's run.
    first = torch.searchsorted(edges[0], edges[0], right=False)
    rank = torch.arange(edges.shape[1], device=edges.device) - first
    return edges[:, rank < limit]


def radius_graph(x: torch.Tensor, r: float, batch: Optional[torch.Tensor] = None,
                 loop: bool = False, max_num_neighbors: int = 32,
                 flow: str = "source_to_target", num_workers: int = 1,
                 batch_size: Optional[int] = None) -> torch.Tensor:
    """Edges between points of the same example closer than ``r`` (at most
    ``max_num_neighbors`` per point, the first in index order); without ``loop`` no self edges.

    Returns:
        (2, E) int64 edge_index, ``[0]`` the neighbour and ``[1]`` the centre for
        ``flow="source_to_target"``.
    """
    _check_flow(flow)
    edge_index = radius(x, x, r, batch, batch, max_num_neighbors, num_workers, batch_size,
                        not loop)
    if flow == "source_to_target":
        row, col = edge_index[1], edge_index[0]
    else:
        row, col = edge_index[0], edge_index[1]
    return torch.stack([row, col], dim=0)


def _sample_counts(ratio, lengths: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """ceil(n_b * ratio) per example, computed in the points' dtype as torch_cluster does."""
    if ratio is None:
        ratio = 0.5
    if isinstance(ratio, torch.Tensor):
        r = ratio.to(device=lengths.device)
        if r.dim() > 1 or (r.dim() == 1 and r.numel() not in (1, lengths.numel())):
            raise ValueError(f"ratio must be a float or a (B,) = ({lengths.numel()},) tensor, got "
                             f"{describe(ratio)}")
        values = r.flatten().tolist()
    elif isinstance(ratio, (int, float)) and not isinstance(ratio, bool):
        r = torch.tensor(float(ratio), dtype=dtype, device=lengths.device)
        values = [float(ratio)]
    else:
        raise ValueError(f"ratio must be a float or a tensor, got {type(ratio).__name__}")
    if not all(0 < v <= 1 for v in values):
        raise ValueError(f"ratio must lie in (0, 1], got {values}")
    return torch.ceil(lengths.to(r.dtype) * r).to(torch.int64)


def fps(src: torch.Tensor, batch: Optional[torch.Tensor] = None,
        ratio: Optional[Union[torch.Tensor, float]] = None, random_start: bool = True,
        batch_size: Optional[int] = None,
        ptr: Optional[Union[torch.Tensor, List[int]]] = None) -> torch.Tensor:
    """Farthest point sampling of ``ceil(ratio * n_b)`` points per example.

    Args:
        src: (N, F) points, any F >= 1; batch: sorted (N,) example of each point, or ``ptr``:
            (B + 1,) offsets; ratio: float or (B,) tensor in (0, 1], default 0.5;
        random_start: start at a random point of each example instead of its first.

    Returns:
        (sum of samples,) int64 global indices into ``src``, example by example, each example's
        in sampling order (ties to the lowest index).
    """
    src = _flat_points(src, "src")
    N = src.shape[0]
    if ptr is not None:
        ptr_vec = pointers_from_ptr(ptr, N, src.device)
    else:
        ptr_vec = batch_pointers(batch, N, batch_size, "batch", src.device)
    padded, lengths, _ = pad_flat(src, ptr_vec)
    counts = torch.minimum(_sample_counts(ratio, lengths, src.dtype), lengths)
    B = lengths.numel()
    if B == 0 or N == 0:
        return torch.empty(0, dtype=torch.long, device=src.device)
    start = torch.zeros(B, dtype=torch.int64, device=src.device)
    if random_start:
        draw = torch.rand(B, dtype=src.dtype if src.dtype in (torch.float32, torch.float64)
                          else torch.float32, device=src.device)
        start = torch.minimum((draw * lengths.to(draw.dtype)).long(), (lengths - 1).clamp_min(0))
    idx = ops_fps(padded, int(counts.max()), lengths, start_idx=start)  # (B, max count)
    slot = torch.arange(idx.shape[1], device=src.device)
    chosen = slot[None, :] < counts[:, None]
    return (idx + ptr_vec[:-1, None])[chosen]


__all__ = ["fps", "knn", "knn_graph", "radius", "radius_graph"]
