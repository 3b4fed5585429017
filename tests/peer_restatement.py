"""Plain-PyTorch restatements of the peers' point ops, the oracles of the shim tests.

Written from the originals' semantics (pointnet2_ops' CUDA kernels and Python wrappers,
KNN_CUDA's kNN, torch_cluster's CUDA kernels and wrappers, DGCNN's reference model): full
distance matrices, explicit loops, torch.gather and torch.topk, never recon_fast's kernels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from reference import acc_dtype


def sq_dists(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """(..., M, D) x (..., N, D) -> (..., M, N) squared distances, summed over the coordinates
    in order in the accumulation dtype."""
    dtype = acc_dtype(q.dtype)
    diff = q.to(dtype)[..., :, None, :] - p.to(dtype)[..., None, :, :]
    sq = diff * diff
    d = sq[..., 0]
    for c in range(1, sq.shape[-1]):
        d = d + sq[..., c]
    return d


def radius_squared(radius: float, dtype: torch.dtype) -> torch.Tensor:
    """pointnet2 and pytorch3d round the radius to float, then square it."""
    r = torch.tensor(radius, dtype=acc_dtype(dtype))
    return r * r


# --------------------------------------------------------------------------------------------
# pointnet2_ops
# --------------------------------------------------------------------------------------------

def pointnet2_ball_query(radius, nsample, xyz, new_xyz):
    """pointnet2's query_ball_point kernel: scan points in index order, keep the first nsample
    with d^2 < r^2; the first hit fills every slot before the others overwrite theirs; the output
    starts as zeros (an empty ball stays 0). -> (B, npoint, nsample) int32."""
    d = sq_dists(new_xyz, xyz).cpu()  # (B, npoint, N)
    r2 = radius_squared(radius, xyz.dtype)
    B, npoint = d.shape[:2]
    out = torch.zeros(B, npoint, nsample, dtype=torch.int32)
    for b in range(B):
        for j in range(npoint):
            hits = torch.nonzero(d[b, j] < r2).flatten()[:nsample]
            if len(hits):
                out[b, j, :] = hits[0]
                out[b, j, : len(hits)] = hits
    return out


def group_channels(features, idx):
    """features (B, C, N), idx (B, ...) -> (B, C, ...) by torch.gather (differentiable)."""
    B, C = features.shape[:2]
    flat = idx.long().reshape(B, 1, -1).expand(B, C, -1)
    return features.gather(2, flat).reshape(B, C, *idx.shape[1:])


def pointnet2_fps(xyz, npoint):
    """pointnet2's furthest_point_sampling kernel: start at 0, running minimum from 1e10, points
    with |p|^2 <= 1e-3 skipped, first strictly larger distance wins. -> (B, npoint) int64."""
    pts_all = xyz.detach().to(acc_dtype(xyz.dtype)).cpu()
    out = torch.zeros(xyz.shape[0], npoint, dtype=torch.int64)
    for b, pts in enumerate(pts_all):
        sq = pts * pts
        eligible = ((sq[:, 0] + sq[:, 1]) + sq[:, 2]).double() > 1e-3
        temp = torch.full((pts.shape[0],), 1e10, dtype=pts.dtype)
        old = 0
        for j in range(1, npoint):
            d = sq_dists(pts[old][None], pts)[0]
            temp = torch.where(eligible, torch.minimum(d, temp), temp)
            old = int(torch.where(eligible, temp, -1.0).argmax()) if eligible.any() else 0
            out[b, j] = old
    return out


def pointnet2_three_nn(unknown, known):
    """Three nearest known points: Euclidean distances ascending, lowest index on ties; not
    differentiable (the original marks both outputs so)."""
    d = sq_dists(unknown.detach(), known.detach())
    sq, idx = torch.sort(d, dim=2, stable=True)
    return sq[..., :3].sqrt().to(unknown.dtype), idx[..., :3]


def query_and_group(radius, nsample, xyz, new_xyz, features, use_xyz=True):
    """QueryAndGroup's forward: centred neighbour coordinates, then the neighbours' features."""
    idx = pointnet2_ball_query(radius, nsample, xyz, new_xyz).to(xyz.device)
    grouped_xyz = group_channels(xyz.transpose(1, 2), idx) - new_xyz.transpose(1, 2)[..., None]
    if features is None:
        return grouped_xyz
    grouped = group_channels(features, idx)
    return torch.cat([grouped_xyz, grouped], 1) if use_xyz else grouped


def sa_module_forward(module, xyz, features):
    """A PointnetSAModule(MSG)'s forward with its own MLPs: FPS centres, per scale ball-query
    grouping (or all points), shared MLP, max over the neighbours."""
    new_xyz = None
    if module.npoint is not None:
        centres = pointnet2_fps(xyz, module.npoint).to(xyz.device)
        new_xyz = group_channels(xyz.transpose(1, 2), centres).transpose(1, 2)
    outs = []
    for grouper, mlp in zip(module.groupers, module.mlps):
        if module.npoint is None:
            grouped = xyz.transpose(1, 2)[:, :, None, :]
            if features is not None:
                parts = [grouped, features[:, :, None, :]] if grouper.use_xyz else \
                    [features[:, :, None, :]]
                grouped = torch.cat(parts, 1)
        else:
            grouped = query_and_group(grouper.radius, grouper.nsample, xyz, new_xyz, features,
                                      grouper.use_xyz)
        outs.append(mlp(grouped).amax(dim=3))
    return new_xyz, torch.cat(outs, 1)


def fp_module_forward(module, unknown, known, unknow_feats, known_feats):
    """A PointnetFPModule's forward: inverse-distance weights of the three nearest known points
    (distance + 1e-8), interpolated features, skip features, shared MLP. Without known points
    the (B, C, 1) known features are broadcast to every unknown point."""
    if known is None:
        interpolated = known_feats.expand(*known_feats.shape[:2], unknown.shape[1])
    else:
        dist, idx = pointnet2_three_nn(unknown, known)
        recip = 1.0 / (dist + 1e-8)
        weight = recip / recip.sum(2, keepdim=True)
        interpolated = sum(group_channels(known_feats, idx[..., k].to(unknown.device))
                           * weight[..., k][:, None, :] for k in range(3))
    if unknow_feats is not None:
        interpolated = torch.cat([interpolated, unknow_feats], 1)
    return module.mlp(interpolated[..., None])[..., 0]


# --------------------------------------------------------------------------------------------
# KNN_CUDA
# --------------------------------------------------------------------------------------------

def knn_cuda_knn(ref, query, k):
    """KNN_CUDA in transpose mode: ref (B, N, D), query (B, M, D) -> Euclidean distances and
    int64 indices (B, M, k), nearest first; its insertion sort keeps equal distances in index
    order. Computed in float32 as the original (float64 inputs in float64: the shim's one
    documented departure)."""
    dtype = torch.float64 if ref.dtype == torch.float64 else torch.float32
    d = sq_dists(query.to(dtype), ref.to(dtype))  # (B, M, N)
    sq, idx = torch.sort(d, dim=2, stable=True)
    return sq[..., :k].sqrt(), idx[..., :k]


# --------------------------------------------------------------------------------------------
# torch_cluster
# --------------------------------------------------------------------------------------------

def examples(batch: torch.Tensor | None, n: int, size: int | None = None):
    """The index ranges of the examples of a sorted batch vector."""
    if batch is None:
        return [range(0, n)]
    batch = batch.cpu()
    size = size or (int(batch.max()) + 1 if n else 0)
    counts = torch.bincount(batch, minlength=size).tolist()
    starts = [sum(counts[:b]) for b in range(size)]
    return [range(s, s + c) for s, c in zip(starts, counts)]


def _paired_examples(batch_x, batch_y, nx, ny):
    size = max([int(b.max()) + 1 for b in (batch_x, batch_y) if b is not None and b.numel()]
               or [1])
    return zip(examples(batch_x, nx, size), examples(batch_y, ny, size))


def cluster_knn(x, y, k, batch_x=None, batch_y=None, cosine=False):
    """torch_cluster.knn: for each y, min(k, n) nearest x of its example, sorted by distance
    (cosine: 1 - cos), lowest index on ties. -> (2, E) [y, x]."""
    rows, cols = [], []
    for ex, ey in _paired_examples(batch_x, batch_y, x.shape[0], y.shape[0]):
        if len(ex) == 0 or len(ey) == 0:
            continue
        xs, ys = x[list(ex)], y[list(ey)]
        if cosine:
            d = 1 - F.normalize(ys.double(), dim=1) @ F.normalize(xs.double(), dim=1).T
        else:
            d = sq_dists(ys, xs)
        order = torch.sort(d, dim=1, stable=True).indices[:, :k]
        for i, yi in enumerate(ey):
            for j in order[i].tolist():
                rows.append(yi)
                cols.append(ex.start + j)
    return torch.tensor([rows, cols], dtype=torch.long).reshape(2, -1)


def cluster_radius(x, y, r, batch_x=None, batch_y=None, max_num_neighbors=32,
                   ignore_same_index=False):
    """torch_cluster.radius (CUDA kernel): for each y, the first max_num_neighbors x of its
    example in index order with d^2 < r^2. -> (2, E) [y, x]."""
    rows, cols = [], []
    r2 = radius_squared(r, x.dtype)
    for ex, ey in _paired_examples(batch_x, batch_y, x.shape[0], y.shape[0]):
        if len(ex) == 0 or len(ey) == 0:
            continue
        d = sq_dists(y[list(ey)], x[list(ex)]).cpu()
        for i, yi in enumerate(ey):
            count = 0
            for j in range(len(ex)):
                if d[i, j] < r2 and not (ignore_same_index and ex.start + j == yi):
                    rows.append(yi)
                    cols.append(ex.start + j)
                    count += 1
                    if count == max_num_neighbors:
                        break
    return torch.tensor([rows, cols], dtype=torch.long).reshape(2, -1)


def cluster_fps(src, batch=None, ratio=0.5, start=None):
    """torch_cluster.fps: ceil(n * ratio) samples per example, from `start` (local index per
    example, default 0); next = argmax of the running minimum squared distance (first on ties).
    -> global indices, example by example."""
    out = []
    for b, ex in enumerate(examples(batch, src.shape[0])):
        if len(ex) == 0:
            continue
        pts = src[list(ex)].to(acc_dtype(src.dtype))
        count = math.ceil(len(ex) * ratio)
        first = 0 if start is None else int(start[b])
        chosen = [first]
        dist = sq_dists(pts[first][None], pts)[0]
        for _ in range(1, count):
            nxt = int(dist.argmax())
            chosen.append(nxt)
            dist = torch.minimum(dist, sq_dists(pts[nxt][None], pts)[0])
        out += [ex.start + c for c in chosen]
    return torch.tensor(out, dtype=torch.long)


# --------------------------------------------------------------------------------------------
# DGCNN
# --------------------------------------------------------------------------------------------

def dgcnn_knn(x, k):
    """DGCNN's knn: x (B, C, N) -> idx (B, N, k) of the largest -|xi - xj|^2 via the matmul
    expansion and topk."""
    inner = -2 * torch.matmul(x.transpose(2, 1), x)
    xx = torch.sum(x ** 2, dim=1, keepdim=True)
    return (-xx - inner - xx.transpose(2, 1)).topk(k=k, dim=-1)[1]


def dgcnn_graph_feature(x, k, idx):
    """DGCNN's get_graph_feature: x (B, C, N), idx (B, N, k) -> (B, 2C, N, k) of
    (neighbour - centre, centre)."""
    B, C, N = x.shape
    flat = (idx + torch.arange(B, device=x.device).view(-1, 1, 1) * N).view(-1)
    rows = x.transpose(2, 1).contiguous()
    feature = rows.view(B * N, -1)[flat, :].view(B, N, k, C)
    centre = rows.view(B, N, 1, C).repeat(1, 1, k, 1)
    return torch.cat((feature - centre, centre), dim=3).permute(0, 3, 1, 2).contiguous()
