"""The fused Chamfer loss (torch.ops.recon_fast.chamfer_loss) for many small full clouds.

ReCon's reconstruction loss compares thousands of 32-point patches; computing it from the chamfer
op and torch reductions takes about fourteen launches forward + backward. On CUDA the fused op
does it in three: one kernel for the distances, both minima and each pair's loss, one sum over the
pairs, and one backward kernel. `chamfer_distance` routes full clouds of at most
MAX_FUSED_POINTS points each to it on CUDA.

On the CPU the op is the composition of the chamfer op and torch reductions (there is no fused
CPU kernel): it exists there so that the op's contract (schema, fake kernels, autograd) is
checked on any machine.
"""

from __future__ import annotations

import torch

from recon_fast.ops._validation import check_pair, check_points, describe

MAX_FUSED_POINTS = 256  # per cloud, csrc/chamfer/chamfer_loss_cuda.cu kMaxPoints
REDUCTIONS = {"none": 0, "sum": 1, "mean": 2}
_FUSED_DTYPES = (torch.float32, torch.float64)


def _has_cuda_kernel() -> bool:
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key("recon_fast::chamfer_loss", "CUDA")
    except RuntimeError:  # an extension built before the op existed
        return False


_CUDA_KERNEL = _has_cuda_kernel()


def fused_loss_applies(x, y, x_lengths, y_lengths) -> bool:
    """Whether chamfer_distance(x, y, ...) runs as the fused op: full CUDA clouds of 1 to
    MAX_FUSED_POINTS points, float32/float64, with the CUDA kernel built."""
    if not (_CUDA_KERNEL and isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
        return False
    if x_lengths is not None or y_lengths is not None or x.dim() != 3 or y.dim() != 3:
        return False
    return (x.is_cuda and y.device == x.device and x.dtype in _FUSED_DTYPES and y.dtype == x.dtype
            and 1 <= x.shape[1] <= MAX_FUSED_POINTS and 1 <= y.shape[1] <= MAX_FUSED_POINTS)


def fused_chamfer_loss(x: torch.Tensor, y: torch.Tensor, *, norm: int, reduction: str) -> torch.Tensor:
    """chamfer_distance for clouds where `fused_loss_applies`: the same value and gradients."""
    check_points(x, "x")
    check_points(y, "y")
    check_pair(x, "x", y, "y")
    if reduction == "mean" and x.shape[0] == 0:
        raise ValueError(f"x holds no clouds ({describe(x)}): the mean over an empty batch is "
                         "undefined; use reduction='sum' or 'none'")
    loss, _, _ = torch.ops.recon_fast.chamfer_loss(x, y, norm, REDUCTIONS[reduction])
    return loss


# ------------------------------------------------------------------------- fake and CPU kernels

def _chamfer_loss_fake(x, y, norm, reduction):
    B, N, M = x.shape[0], x.shape[1], y.shape[1]
    loss = x.new_empty((B,)) if reduction == 0 else x.new_empty(())
    return loss, x.new_empty((B, N), dtype=torch.int64), x.new_empty((B, M), dtype=torch.int64)


def _chamfer_loss_backward_fake(grad_loss, x, y, idx_xy, idx_yx, norm, reduction):
    return x.new_empty(x.shape), y.new_empty(y.shape)  # contiguous, like the CUDA kernel's


def _terms(dist: torch.Tensor, norm: int) -> torch.Tensor:
    return dist if norm == 2 else dist.clamp_min(torch.finfo(dist.dtype).tiny).sqrt()


def _reduce(per_pair: torch.Tensor, reduction: int) -> torch.Tensor:
    return (per_pair, per_pair.sum(), per_pair.mean())[reduction]


def _chamfer_loss_cpu(x, y, norm, reduction):
    full_x = torch.full((x.shape[0],), x.shape[1], dtype=torch.int64)
    full_y = torch.full((y.shape[0],), y.shape[1], dtype=torch.int64)
    d_xy, d_yx, idx_xy, idx_yx = torch.ops.recon_fast.chamfer(x, y, full_x, full_y, 2)
    per_pair = _terms(d_xy, norm).mean(dim=1) + _terms(d_yx, norm).mean(dim=1)
    if norm != 2:
        per_pair = per_pair / 2
    return _reduce(per_pair, reduction), idx_xy, idx_yx


def _chamfer_loss_backward_cpu(grad_loss, x, y, idx_xy, idx_yx, norm, reduction):
    B, N, M = x.shape[0], x.shape[1], y.shape[1]
    per_pair = grad_loss.expand(B) if reduction != 0 else grad_loss
    if reduction == 2:
        per_pair = per_pair / B
    if norm != 2:
        per_pair = per_pair / 2

    def grad_of_dist(query, cloud, idx, count):
        d = (query - torch.gather(cloud, 1, idx[..., None].expand(-1, -1, 3))).square().sum(-1)
        tiny = torch.finfo(d.dtype).tiny
        slope = torch.ones_like(d) if norm == 2 else torch.where(d >= tiny, 0.5 / d.clamp_min(tiny).sqrt(), 0.0)
        return (per_pair[:, None] / count * slope).to(x.dtype).contiguous()

    return torch.ops.recon_fast.chamfer_backward(grad_of_dist(x, y, idx_xy, N), grad_of_dist(y, x, idx_yx, M),
                                                 x, y, idx_xy, idx_yx, 2)


# ------------------------------------------------------------------------- autograd

def _setup_context(ctx, inputs, output):
    x, y, norm, reduction = inputs
    _, idx_xy, idx_yx = output
    ctx.save_for_backward(x, y, idx_xy, idx_yx)
    ctx.norm, ctx.reduction = norm, reduction
    ctx.mark_non_differentiable(idx_xy, idx_yx)


def _backward(ctx, grad_loss, _grad_idx_xy, _grad_idx_yx):
    x, y, idx_xy, idx_yx = ctx.saved_tensors
    grad_x, grad_y = torch.ops.recon_fast.chamfer_loss_backward(
        grad_loss.contiguous(), x, y, idx_xy, idx_yx, ctx.norm, ctx.reduction)
    return grad_x, grad_y, None, None


def _register() -> None:
    torch.library.register_fake("recon_fast::chamfer_loss", _chamfer_loss_fake)
    torch.library.register_fake("recon_fast::chamfer_loss_backward", _chamfer_loss_backward_fake)
    torch.library.register_kernel("recon_fast::chamfer_loss", "cpu", _chamfer_loss_cpu)
    torch.library.register_kernel("recon_fast::chamfer_loss_backward", "cpu", _chamfer_loss_backward_cpu)
    torch.library.register_autograd("recon_fast::chamfer_loss", _backward, setup_context=_setup_context)


# An extension built before the op existed has no schema for it: chamfer_distance then never
# routes to it (_CUDA_KERNEL is False) and nothing is registered.
DEFINED = hasattr(torch.ops.recon_fast, "chamfer_loss")
if DEFINED:
    _register()
