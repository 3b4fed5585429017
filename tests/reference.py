"""Plain-PyTorch reference implementations of every recon_fast op.

Shared by tests/ (parity) and bench/ (parity before timing, and the baseline being timed).
Written from the definitions, not from our kernels: explicit loops and full distance matrices,
computed in the accumulation dtype (float32 for halves, float64 for float64), with ties broken
by the lowest index exactly as the ops document.
"""

from __future__ import annotations

import torch


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def sum_coordinates(terms: torch.Tensor) -> torch.Tensor:
    """Sum over the last dimension from the first coordinate up, one addition at a time:
    ((t0 + t1) + t2) + ..., the order every kernel uses (torch.sum may reorder)."""
    out = terms[..., 0]
    for d in range(1, terms.shape[-1]):
        out = out + terms[..., d]
    return out


def pairwise_dist(q: torch.Tensor, p: torch.Tensor, norm: int = 2) -> torch.Tensor:
    """(B, M, D) x (B, N, D) -> (B, M, N) distances, ((dx*dx + dy*dy) + dz*dz) + ... or L1."""
    diff = q[:, :, None, :] - p[:, None, :, :]
    return sum_coordinates(diff * diff if norm == 2 else diff.abs())


def full_lengths(points: torch.Tensor, lengths=None) -> torch.Tensor:
    if lengths is None:
        return torch.full((points.shape[0],), points.shape[1], dtype=torch.int64)
    return torch.as_tensor(lengths, dtype=torch.int64).cpu()


def fps_reference(xyz: torch.Tensor, m: int, lengths=None, start_idx=None,
                  min_norm_sq: float | None = None) -> torch.Tensor:
    """Farthest point sampling, one cloud at a time, one torch op per step."""
    B, N, _ = xyz.shape
    lengths = full_lengths(xyz, lengths)
    out = torch.full((B, m), -1, dtype=torch.int64)
    pts_all = xyz.detach().to(acc_dtype(xyz.dtype)).cpu()
    for b in range(B):
        L = int(lengths[b])
        count = min(m, L)
        if count == 0:
            continue
        pts = pts_all[b, :L]
        start = 0 if start_idx is None else int(start_idx[b])
        norm2 = sum_coordinates(pts * pts)
        eligible = torch.ones(L, dtype=torch.bool)
        if min_norm_sq is not None and min_norm_sq >= 0:
            eligible = ~(norm2.double() <= min_norm_sq)  # compared in double, as pointnet2_ops
        mind = torch.where(eligible, torch.full((L,), float("inf"), dtype=pts.dtype),
                           torch.full((L,), float("-inf"), dtype=pts.dtype))
        out[b, 0] = start
        last = start
        for j in range(1, count):
            d = pairwise_dist(pts[last][None, None], pts[None])[0, 0]
            mind = torch.minimum(mind, d)
            last = int(torch.argmax(mind))  # first maximal index
            out[b, j] = last
    return out


def fps_torch_loop(xyz: torch.Tensor, m: int) -> torch.Tensor:
    """The batched per-iteration torch loop users write (the speed baseline; start index 0)."""
    B, N, _ = xyz.shape
    idx = torch.zeros(B, m, dtype=torch.int64, device=xyz.device)
    mind = torch.full((B, N), float("inf"), dtype=torch.float32, device=xyz.device)
    pts = xyz.float()
    last = torch.zeros(B, dtype=torch.int64, device=xyz.device)
    batch = torch.arange(B, device=xyz.device)
    for j in range(1, m):
        d = ((pts - pts[batch, last][:, None, :]) ** 2).sum(-1)
        mind = torch.minimum(mind, d)
        last = mind.argmax(dim=1)
        idx[:, j] = last
    return idx


def sort_by_dist_then_index(d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ascending sort along the last dim; equal distances keep index order (stable sort)."""
    return torch.sort(d, dim=-1, stable=True)


def knn_reference(query, points, k, query_lengths=None, point_lengths=None, norm=2):
    """k nearest neighbours from the full distance matrix; differentiable through `dists`."""
    dtype = acc_dtype(query.dtype)
    q, p = query.to(dtype), points.to(dtype)
    d = pairwise_dist(q, p, norm)  # (B, M, N)
    B, M, N = d.shape
    ql = full_lengths(query, query_lengths).to(d.device)
    pl = full_lengths(points, point_lengths).to(d.device)
    invalid = torch.arange(N, device=d.device)[None, None, :] >= pl[:, None, None]
    masked = d.detach().masked_fill(invalid, float("inf"))
    _, order = sort_by_dist_then_index(masked)
    idx = order[..., :k]
    dists = torch.gather(d, 2, idx)
    missing = (torch.arange(k, device=d.device)[None, None, :] >= pl[:, None, None]) | (
        torch.arange(M, device=d.device)[None, :, None] >= ql[:, None, None])
    idx = idx.masked_fill(missing, -1)
    dists = dists.masked_fill(missing, 0)
    return dists.to(query.dtype), idx


def knn_cdist_topk(query, points, k, chunk: int | None = None):
    """What point-cloud code usually does for kNN: a distance matrix and topk (the baseline),
    chunked over queries for large clouds. Unsorted ties are not specified."""
    if chunk is None:
        d = torch.cdist(query, points) ** 2
        return torch.topk(d, k, dim=-1, largest=False)
    dists, idx = [], []
    for s in range(0, query.shape[1], chunk):
        d = torch.cdist(query[:, s:s + chunk], points) ** 2
        v, i = torch.topk(d, k, dim=-1, largest=False)
        dists.append(v)
        idx.append(i)
    return torch.cat(dists, 1), torch.cat(idx, 1)


def knn_matmul_topk(query, points, k):
    """The reference code's kNN (utils/knn.py): |q|^2 + |p|^2 - 2 q.p by matmul, then topk."""
    d = -2 * torch.matmul(query, points.transpose(1, 2))
    d += (query ** 2).sum(-1)[:, :, None]
    d += (points ** 2).sum(-1)[:, None, :]
    return torch.topk(d, k, dim=-1, largest=False, sorted=False)


def gather_points_reference(points: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    B, C = points.shape[0], points.shape[2]
    flat = idx.reshape(B, -1)
    safe = flat.clamp_min(0)
    out = torch.gather(points, 1, safe[..., None].expand(B, flat.shape[1], C))
    out = out * (flat >= 0)[..., None].to(points.dtype)
    return out.reshape(*idx.shape, C)


def chamfer_reference(x, y, x_lengths=None, y_lengths=None, norm=2):
    """Nearest neighbours both ways from the full matrix: (dist_xy, dist_yx, idx_xy, idx_yx)."""
    dtype = acc_dtype(x.dtype)
    d = pairwise_dist(x.to(dtype), y.to(dtype), norm)  # (B, N, M)
    B, N, M = d.shape
    xl = full_lengths(x, x_lengths).to(d.device)
    yl = full_lengths(y, y_lengths).to(d.device)
    x_pad = torch.arange(N, device=d.device)[None, :] >= xl[:, None]  # (B, N)
    y_pad = torch.arange(M, device=d.device)[None, :] >= yl[:, None]  # (B, M)
    inf = float("inf")
    d_rows = d.detach().masked_fill(y_pad[:, None, :], inf)
    d_cols = d.detach().masked_fill(x_pad[:, :, None], inf)
    idx_xy = d_rows.argmin(dim=2) if M > 0 else torch.zeros(B, N, dtype=torch.int64)
    idx_yx = d_cols.argmin(dim=1) if N > 0 else torch.zeros(B, M, dtype=torch.int64)
    dist_xy = torch.gather(d, 2, idx_xy[..., None])[..., 0] if M > 0 else torch.zeros(B, N, dtype=dtype)
    dist_yx = torch.gather(d, 1, idx_yx[:, None, :])[:, 0] if N > 0 else torch.zeros(B, M, dtype=dtype)
    no_y = x_pad | (yl[:, None] == 0)
    no_x = y_pad | (xl[:, None] == 0)
    idx_xy, dist_xy = idx_xy.masked_fill(no_y, -1), dist_xy.masked_fill(no_y, 0)
    idx_yx, dist_yx = idx_yx.masked_fill(no_x, -1), dist_yx.masked_fill(no_x, 0)
    return dist_xy.to(x.dtype), dist_yx.to(x.dtype), idx_xy, idx_yx


def chamfer_cdist_min(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The usual plain-PyTorch Chamfer L2 loss: cdist, min both ways (the speed baseline)."""
    d = torch.cdist(x, y) ** 2
    return d.min(dim=2).values.mean() + d.min(dim=1).values.mean()


def chamfer_l2_reference(x, y):
    """Point-MAE ChamferDistanceL2: mean(dist1) + mean(dist2) over every point of the batch."""
    dxy, dyx, _, _ = chamfer_reference(x, y)
    return dxy.float().mean() + dyx.float().mean()


def chamfer_l1_reference(x, y):
    """Point-MAE ChamferDistanceL1: (mean(sqrt(dist1)) + mean(sqrt(dist2))) / 2."""
    dxy, dyx, _, _ = chamfer_reference(x, y)
    return (dxy.float().sqrt().mean() + dyx.float().sqrt().mean()) / 2


def group_reference(xyz: torch.Tensor, num_group: int, group_size: int, pointnet2_compat=True):
    """ReCon's Group from its definition: FPS centres (index 0 first), kNN patches minus centre."""
    center_idx = fps_reference(xyz, num_group, min_norm_sq=1e-3 if pointnet2_compat else None)
    center = gather_points_reference(xyz, center_idx.to(xyz.device))
    _, idx = knn_reference(center.detach(), xyz, group_size)
    neighborhood = gather_points_reference(xyz, idx) - center[:, :, None, :]
    return neighborhood, center


def ball_query_reference(query, points, k, radius, query_lengths=None, point_lengths=None):
    """Ball query of any point dimension D, one query at a time: the first k points in index
    order with squared distance (summed over coordinates in order) < radius^2, the radius
    rounded to the accumulation dtype before squaring; -1 / 0 elsewhere.
    Returns (dists (B, M, k) in the input dtype, idx (B, M, k) int64)."""
    B, M, D = query.shape
    dtype = acc_dtype(query.dtype)
    ql, pl = full_lengths(query, query_lengths), full_lengths(points, point_lengths)
    q, p = query.detach().to(dtype).cpu(), points.detach().to(dtype).cpu()
    r = torch.tensor(radius, dtype=dtype)
    r2 = r * r
    dists = torch.zeros(B, M, k, dtype=dtype)
    idx = torch.full((B, M, k), -1, dtype=torch.int64)
    for b in range(B):
        diff = q[b, :, None, :] - p[b, None, : pl[b], :]  # (M, n, D)
        sq = diff * diff
        d = sq[..., 0]
        for c in range(1, D):
            d = d + sq[..., c]
        for i in range(int(ql[b])):
            inside = torch.nonzero(d[i] < r2).flatten()[:k]
            idx[b, i, : len(inside)] = inside
            dists[b, i, : len(inside)] = d[i, inside]
    return dists.to(query.dtype), idx


def ball_query_dense(query, points, k, radius):
    """Ball query without loops over queries, for benchmarks: per cloud the full squared
    distance matrix (same summation order as ball_query_reference), then the k smallest indices
    among those inside. Returns (dists, idx) as ball_query_reference."""
    B, M, D = query.shape
    N = points.shape[1]
    dtype = acc_dtype(query.dtype)
    r = torch.tensor(radius, dtype=dtype, device=query.device)
    dists, idx = [], []
    for b in range(B):
        diff = query[b, :, None, :].to(dtype) - points[b, None, :, :].to(dtype)  # (M, N, D)
        sq = diff * diff
        d = sq[..., 0]
        for c in range(1, D):
            d = d + sq[..., c]
        order = torch.arange(N, device=query.device).expand(M, N)
        key = torch.where(d < r * r, order, N)
        first = key.topk(min(k, N), dim=1, largest=False).values  # (M, k), inside first
        found = first < N
        chosen = torch.where(found, first, -1)
        dist = torch.where(found, d.gather(1, first.clamp_max(N - 1)), 0)
        pad = k - chosen.shape[1]
        if pad:
            chosen = torch.cat([chosen, chosen.new_full((M, pad), -1)], 1)
            dist = torch.cat([dist, dist.new_zeros((M, pad))], 1)
        idx.append(chosen)
        dists.append(dist)
    return torch.stack(dists).to(query.dtype), torch.stack(idx)
