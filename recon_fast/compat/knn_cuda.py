"""Drop-in replacement for ``knn_cuda`` (unlimblue/KNN_CUDA), as Point-MAE and ReCon use it.

Swap ``from knn_cuda import KNN`` for ``from recon_fast.compat.knn_cuda import KNN``, or call
:func:`recon_fast.compat.install` to make ``import knn_cuda`` resolve here::

    knn = KNN(k=32, transpose_mode=True)
    dist, idx = knn(ref, query)   # ref (B, N, 3) candidates, query (B, M, 3)

- ``transpose_mode=True``: ref (B, N, D), query (B, M, D) -> dist, idx of shape (B, M, k).
- ``transpose_mode=False``: ref (B, D, N), query (B, D, M) -> dist, idx of shape (B, k, M).
- ``dist`` holds Euclidean (not squared) distances, nearest first; ``idx`` int64 indices into
  ref. Neither carries a gradient (the original runs under ``torch.no_grad``).
- ``knn(ref, query, k)``, the module-level function, takes one cloud with the original's
  (D, N) / (D, M) layout and returns (k, M) distances and indices.

Where it differs, and why:

- CPU and CUDA tensors in any float dtype (the original: CUDA only, computing in float32).
  ``dist`` is float32 as in the original, float64 for float64 input (not rounded down).
- Any point dimension D >= 1, as the original (D = 3 runs the fastest kernels).
- ``k`` larger than N raises ``ValueError`` (the original reads past its distance matrix).
- Exact ties go to the lowest index, as the original's insertion sort does for equal distances
  computed in the same order.
"""

from __future__ import annotations

import torch
from torch import nn

from recon_fast.ops import knn as ops_knn
from recon_fast.ops.validate import FLOAT_DTYPES, accumulation_dtype, check_count, describe

__version__ = "0.2"


def _check_cloud(t, name: str, layout: str) -> None:
    if not isinstance(t, torch.Tensor) or t.dim() != 3:
        seen = describe(t) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{name} must have shape {layout}, got {seen}")
    if t.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be float16, bfloat16, float32 or float64, got {describe(t)}")


def _nearest(ref: torch.Tensor, query: torch.Tensor, k: int):
    """ref (B, N, D), query (B, M, D) -> Euclidean dist, int64 idx (B, M, k), no gradient."""
    N = ref.shape[1]
    k = check_count(k, "k", 1, max(N, 1), f"number of neighbours; ref has N = {N} points")
    if N == 0:
        raise ValueError(f"ref is empty ({describe(ref)}): there are no neighbours to find")
    out_dtype = accumulation_dtype(ref.dtype)
    with torch.no_grad():
        found = ops_knn(query.to(out_dtype), ref.to(out_dtype), k)
        return found.dists.sqrt(), found.idx


def knn(ref: torch.Tensor, query: torch.Tensor, k: int):
    """One cloud in the original's layout: ref (D, N), query (D, M) -> dist, idx (k, M)."""
    for name, t in (("ref", ref), ("query", query)):
        if not isinstance(t, torch.Tensor) or t.dim() != 2:
            seen = describe(t) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} must have shape (D, points), got {seen}")
    dist, idx = _nearest(ref.t()[None], query.t()[None], k)  # (1, M, k)
    return dist[0].t().contiguous(), idx[0].t().contiguous()


class KNN(nn.Module):
    """k nearest neighbours of each query point among the ref points, as ``knn_cuda.KNN``.

    Args:
        k: number of neighbours, 1 <= k <= N.
        transpose_mode: True for (B, points, D) inputs and (B, M, k) outputs, False for
            (B, D, points) inputs and (B, k, M) outputs.
    """

    def __init__(self, k: int, transpose_mode: bool = False):
        super().__init__()
        self.k = k
        self._t = transpose_mode

    def forward(self, ref: torch.Tensor, query: torch.Tensor):
        layout = "(B, points, D)" if self._t else "(B, D, points)"
        _check_cloud(ref, "ref", layout)
        _check_cloud(query, "query", layout)
        if ref.shape[0] != query.shape[0]:
            raise ValueError(f"ref and query must have the same batch size, got ref.shape="
                             f"{tuple(ref.shape)} and query.shape={tuple(query.shape)}")
        if ref.device != query.device:
            raise ValueError(f"ref is on {ref.device} but query is on {query.device}")
        if not self._t:
            ref, query = ref.transpose(1, 2), query.transpose(1, 2)  # (B, points, D)
        if ref.shape[2] != query.shape[2]:
            raise ValueError(f"ref and query must have the same point dimension D, got "
                             f"{describe(ref)} and {describe(query)}")
        dist, idx = _nearest(ref, query, self.k)  # (B, M, k)
        if not self._t:
            dist, idx = dist.transpose(1, 2).contiguous(), idx.transpose(1, 2).contiguous()
        return dist, idx


__all__ = ["KNN", "knn"]
