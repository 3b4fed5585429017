"""Attention for the ReCon block with a switchable backend.

The functions take the packed projection outputs the official modules produce and return the
heads merged back to (B, T, C), ready for the output projection:

* ``self_attention(qkv, num_heads)``: qkv (B, T, 3C) from ``Attention.qkv`` (laid out as
  (B, T, 3, H, D), the official reshape) -> (B, T, C).
* ``cross_attention(q, kv, num_heads)``: q (B, Tq, C) from ``CrossAttention.q``, kv (B, T, 2C)
  from ``CrossAttention.kv`` (laid out as (B, T, 2, H, D)) -> (B, Tq, C).
* ``recon_attention(qkv, q_cross, kv_cross, num_heads)``: both of a ReCon block (the patch tokens'
  self-attention and the global queries' cross-attention to the same tokens) -> (self, cross);
  the Triton backend runs them in one launch forward and one backward.

Softmax scale is head_dim ** -0.5. ``key_lengths`` (B,) optionally masks keys >= length (ragged
batches); padded query rows still produce outputs (from the valid keys). Backends:

* "triton": fused Triton kernels (recon_fast.kernels.recon_attention), q/k/v read through strides
  from the packed tensors, online softmax in fp32 (fp64 for fp64), single-pass backward from the
  saved log-sum-exp. Runs on CUDA; on CPU only under the Triton interpreter (TRITON_INTERPRET=1
  set before triton is first imported).
* "sdpa": torch.nn.functional.scaled_dot_product_attention plus the head reshapes a model needs.
* "eager": the reference maths, as the official code.
* "auto": "triton" for fp16/bf16/fp32 CUDA tensors when Triton works there (and for CPU tensors
  when the caller set TRITON_INTERPRET=1), otherwise "sdpa".

The Triton path is a set of ``torch.library.custom_op`` s (``torch.ops.recon_fast.triton_*``) with
fake and autograd registrations, so it works under ``torch.compile``.
"""

from __future__ import annotations

import os
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from recon_fast.ops.validate import (FLOAT_DTYPES, accumulation_dtype, describe, is_int,
                                     length_vector)

BACKENDS = ("auto", "triton", "sdpa", "eager")
_TRITON_AUTO_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# Sm80 (Ampere) is the oldest GPU the kernels are built and checked for (bf16 tensor cores).
_MIN_CAPABILITY = (8, 0)
# Largest head dimension the Triton kernels keep in registers (recon_attention.MAX_HEAD_DIM; kept
# here so that choosing a backend does not import triton).
_MAX_HEAD_DIM = 256
# Largest head dimension "auto" gives to Triton. ptxas (sm_90, triton 3.6) keeps the ReCon head
# dim 64 in registers in every kernel at ReCon's shapes, while at head_dim 128 the fp32 backward
# of a one-key-block sequence spills 440 bytes and at 256 every backward spills: SDPA's kernels
# are the better default there; backend="triton" still runs them.
_AUTO_MAX_HEAD_DIM = 64


# ---------------------------------------------------------------------------------------------
# Kernel module and backend choice
# ---------------------------------------------------------------------------------------------

def _load_kernels():
    """recon_fast.kernels.recon_attention, imported on first use (it imports triton, which is
    slow to import and optional for the other backends)."""
    from recon_fast.kernels import recon_attention

    return recon_attention


def _env_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_unavailable_reason(device: torch.device) -> Optional[str]:
    """Why the Triton backend cannot run on `device` (None when it can)."""
    device = torch.device(device)
    if device.type not in ("cuda", "cpu"):
        return f"the Triton backend runs on CUDA (or CPU under the interpreter), not {device.type}"
    try:
        kernels = _load_kernels()
    except ImportError as err:  # triton missing or broken
        return f"triton cannot be imported ({err})"
    if device.type == "cpu" and not kernels.INTERPRETED:
        return ("CPU tensors need the Triton interpreter: set TRITON_INTERPRET=1 before triton is "
                "first imported (triton fixes the mode at import)")
    return None


# Both are answered once per trace under torch.compile (they read the environment and devices).
@torch.compiler.assume_constant_result
def _triton_reason(device: torch.device) -> str:
    return triton_unavailable_reason(device) or ""


@torch.compiler.assume_constant_result
def _triton_is_default(device: torch.device, dtype: torch.dtype) -> bool:
    if dtype not in _TRITON_AUTO_DTYPES:
        return False
    if device.type == "cuda":
        if torch.cuda.get_device_capability(device) < _MIN_CAPABILITY:
            return False
    elif not (device.type == "cpu" and _env_interpret()):
        return False  # never the interpreter unless the caller asked for it
    return triton_unavailable_reason(device) is None


def resolve_backend(backend: str, t: torch.Tensor, head_dim: int = 64) -> str:
    """The backend that runs for `backend` on tensors like `t` with heads of `head_dim` ("auto"
    resolved)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    fits = head_dim <= _MAX_HEAD_DIM
    if backend == "auto":
        chosen = head_dim <= _AUTO_MAX_HEAD_DIM and _triton_is_default(t.device, t.dtype)
        return "triton" if chosen else "sdpa"
    if backend == "triton":
        reason = _triton_reason(t.device)
        if reason:
            raise ValueError(f"backend='triton' cannot run here: {reason}")
        if not fits:
            raise ValueError(f"backend='triton' keeps a head in registers: head_dim must be at most "
                             f"{_MAX_HEAD_DIM}, got {head_dim}")
    return backend


# ---------------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------------

def _check_num_heads(num_heads) -> int:
    if not is_int(num_heads) or num_heads < 1:
        raise ValueError(f"num_heads must be a positive int, got {num_heads!r}")
    return int(num_heads)


def _check_packed(t, name: str, parts: int, num_heads: int) -> Tuple[int, int, int, int]:
    """(B, T, H, D) of a packed projection (B, T, parts * H * D)."""
    want = "(B, T, C)" if parts == 1 else f"(B, T, {parts}C)"
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor {want}, got {type(t).__name__}")
    if t.dim() != 3:
        raise ValueError(f"{name} must have shape {want}, got {describe(t)}")
    if t.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be float16, bfloat16, float32 or float64, got {describe(t)}")
    B, T, width = t.shape
    if width == 0 or width % (parts * num_heads):
        raise ValueError(f"{name} has width {width}, which is not {parts} x num_heads ({num_heads}) "
                         f"x head_dim for any head_dim ({describe(t)})")
    if T == 0:
        raise ValueError(f"{name} has no tokens ({describe(t)})")
    return B, T, num_heads, width // (parts * num_heads)


def _check_same(a, a_name: str, b, b_name: str) -> None:
    if a.device != b.device:
        raise ValueError(f"{a_name} is on {a.device} but {b_name} is on {b.device}")
    if a.dtype != b.dtype:
        raise ValueError(f"{a_name} has dtype {a.dtype} but {b_name} has dtype {b.dtype}")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{a_name} has batch size {a.shape[0]} but {b_name} has batch size "
                         f"{b.shape[0]} ({describe(a)}; {describe(b)})")


def _check_cross(q, kv, num_heads: int, q_name: str = "q", kv_name: str = "kv") -> Tuple[int, int]:
    """(T, head_dim) of a cross-attention pair q (B, Tq, C), kv (B, T, 2C)."""
    _, _, _, head_dim = _check_packed(q, q_name, 1, num_heads)
    _, T, _, _ = _check_packed(kv, kv_name, 2, num_heads)
    _check_same(q, q_name, kv, kv_name)
    if kv.shape[2] != 2 * q.shape[2]:
        raise ValueError(f"{kv_name} must have width 2C = {2 * q.shape[2]} for {q_name} of width "
                         f"C = {q.shape[2]}, got {describe(kv)}")
    return T, head_dim


def _check_key_lengths(key_lengths, B: int, T: int, like: torch.Tensor) -> Optional[torch.Tensor]:
    """None or an int64 (B,) tensor on `like`'s device with values in [1, T]."""
    if key_lengths is None:
        return None
    return length_vector(key_lengths, "key_lengths", B, like.device, 1, T,
                         f"every sample needs a key; T = {T}")


# ---------------------------------------------------------------------------------------------
# Triton backend: custom ops with fake and autograd registrations
# ---------------------------------------------------------------------------------------------

def _heads(packed: torch.Tensor, parts: int, num_heads: int):
    """Strided (B, T, H, D) views of the parts of a packed projection, no copies."""
    split = packed.unflatten(2, (parts, num_heads, -1))  # (B, T, P, H, D), a view for any strides
    return split.unbind(2)


def _self_role(kernels, qkv, num_heads):
    return kernels.Role(*_heads(qkv, 3, num_heads))


def _cross_role(kernels, q, kv, num_heads):
    (qh,) = _heads(q, 1, num_heads)
    return kernels.Role(qh, *_heads(kv, 2, num_heads))


def _scale(q_width: int, num_heads: int) -> float:
    return (q_width // num_heads) ** -0.5


def _grads_into(kernels, packed: torch.Tensor, parts: int, num_heads: int):
    """A contiguous gradient for `packed` and the kernels' views into it."""
    grad = torch.empty(packed.shape, dtype=packed.dtype, device=packed.device)
    return grad, _heads(grad, parts, num_heads)


@torch.library.custom_op("recon_fast::triton_self_attention", mutates_args=())
def _triton_self(qkv: torch.Tensor, num_heads: int, key_lengths: Optional[torch.Tensor]
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
    kernels = _load_kernels()
    ((out, lse),) = kernels.attention_forward([_self_role(kernels, qkv, num_heads)], key_lengths,
                                              _scale(qkv.shape[2] // 3, num_heads))
    return out, lse


@torch.library.custom_op("recon_fast::triton_self_attention_backward", mutates_args=())
def _triton_self_backward(grad_out: torch.Tensor, qkv: torch.Tensor, out: torch.Tensor,
                          lse: torch.Tensor, num_heads: int, key_lengths: Optional[torch.Tensor]
                          ) -> torch.Tensor:
    kernels = _load_kernels()
    dqkv, views = _grads_into(kernels, qkv, 3, num_heads)
    kernels.attention_backward([_self_role(kernels, qkv, num_heads)], [out], [lse], [grad_out],
                               [kernels.RoleGrads(*views)], key_lengths,
                               _scale(qkv.shape[2] // 3, num_heads))
    return dqkv


@torch.library.custom_op("recon_fast::triton_cross_attention", mutates_args=())
def _triton_cross(q: torch.Tensor, kv: torch.Tensor, num_heads: int,
                  key_lengths: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    kernels = _load_kernels()
    ((out, lse),) = kernels.attention_forward([_cross_role(kernels, q, kv, num_heads)], key_lengths,
                                              _scale(q.shape[2], num_heads))
    return out, lse


@torch.library.custom_op("recon_fast::triton_cross_attention_backward", mutates_args=())
def _triton_cross_backward(grad_out: torch.Tensor, q: torch.Tensor, kv: torch.Tensor,
                           out: torch.Tensor, lse: torch.Tensor, num_heads: int,
                           key_lengths: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    kernels = _load_kernels()
    dq, (dq_heads,) = _grads_into(kernels, q, 1, num_heads)
    dkv, (dk_heads, dv_heads) = _grads_into(kernels, kv, 2, num_heads)
    kernels.attention_backward([_cross_role(kernels, q, kv, num_heads)], [out], [lse], [grad_out],
                               [kernels.RoleGrads(dq_heads, dk_heads, dv_heads)], key_lengths,
                               _scale(q.shape[2], num_heads))
    return dq, dkv


@torch.library.custom_op("recon_fast::triton_recon_attention", mutates_args=())
def _triton_recon(qkv: torch.Tensor, q_cross: torch.Tensor, kv_cross: torch.Tensor, num_heads: int,
                  key_lengths: Optional[torch.Tensor]
                  ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    kernels = _load_kernels()
    roles = [_self_role(kernels, qkv, num_heads), _cross_role(kernels, q_cross, kv_cross, num_heads)]
    (self_out, self_lse), (cross_out, cross_lse) = kernels.attention_forward(
        roles, key_lengths, _scale(q_cross.shape[2], num_heads))
    return self_out, self_lse, cross_out, cross_lse


@torch.library.custom_op("recon_fast::triton_recon_attention_backward", mutates_args=())
def _triton_recon_backward(grad_self: torch.Tensor, grad_cross: torch.Tensor, qkv: torch.Tensor,
                           q_cross: torch.Tensor, kv_cross: torch.Tensor, self_out: torch.Tensor,
                           self_lse: torch.Tensor, cross_out: torch.Tensor, cross_lse: torch.Tensor,
                           num_heads: int, key_lengths: Optional[torch.Tensor]
                           ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    kernels = _load_kernels()
    roles = [_self_role(kernels, qkv, num_heads), _cross_role(kernels, q_cross, kv_cross, num_heads)]
    dqkv, self_views = _grads_into(kernels, qkv, 3, num_heads)
    dq, (dq_heads,) = _grads_into(kernels, q_cross, 1, num_heads)
    dkv, (dk_heads, dv_heads) = _grads_into(kernels, kv_cross, 2, num_heads)
    kernels.attention_backward(roles, [self_out, cross_out], [self_lse, cross_lse],
                               [grad_self, grad_cross],
                               [kernels.RoleGrads(*self_views), kernels.RoleGrads(dq_heads, dk_heads, dv_heads)],
                               key_lengths, _scale(q_cross.shape[2], num_heads))
    return dqkv, dq, dkv


@_triton_self.register_fake
def _(qkv, num_heads, key_lengths):
    B, T, width = qkv.shape
    return qkv.new_empty(B, T, width // 3), qkv.new_empty(B, num_heads, T, dtype=accumulation_dtype(qkv.dtype))


@_triton_self_backward.register_fake
def _(grad_out, qkv, out, lse, num_heads, key_lengths):
    return qkv.new_empty(qkv.shape)


@_triton_cross.register_fake
def _(q, kv, num_heads, key_lengths):
    B, Tq, C = q.shape
    return q.new_empty(B, Tq, C), q.new_empty(B, num_heads, Tq, dtype=accumulation_dtype(q.dtype))


@_triton_cross_backward.register_fake
def _(grad_out, q, kv, out, lse, num_heads, key_lengths):
    return q.new_empty(q.shape), kv.new_empty(kv.shape)


@_triton_recon.register_fake
def _(qkv, q_cross, kv_cross, num_heads, key_lengths):
    B, T, _ = qkv.shape
    Tq, C = q_cross.shape[1], q_cross.shape[2]
    acc = accumulation_dtype(qkv.dtype)
    return (qkv.new_empty(B, T, C), qkv.new_empty(B, num_heads, T, dtype=acc),
            qkv.new_empty(B, Tq, C), qkv.new_empty(B, num_heads, Tq, dtype=acc))


@_triton_recon_backward.register_fake
def _(grad_self, grad_cross, qkv, q_cross, kv_cross, self_out, self_lse, cross_out, cross_lse,
      num_heads, key_lengths):
    return qkv.new_empty(qkv.shape), q_cross.new_empty(q_cross.shape), kv_cross.new_empty(kv_cross.shape)


def _grad_or_zeros(grad: Optional[torch.Tensor], out: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(out) if grad is None else grad


def _setup_self(ctx, inputs, output):
    qkv, num_heads, key_lengths = inputs
    out, lse = output
    ctx.save_for_backward(qkv, out, lse, key_lengths)
    ctx.num_heads = num_heads
    ctx.mark_non_differentiable(lse)


def _backward_self(ctx, grad_out, _grad_lse):
    qkv, out, lse, key_lengths = ctx.saved_tensors
    dqkv = torch.ops.recon_fast.triton_self_attention_backward(
        _grad_or_zeros(grad_out, out), qkv, out, lse, ctx.num_heads, key_lengths)
    return dqkv, None, None


def _setup_cross(ctx, inputs, output):
    q, kv, num_heads, key_lengths = inputs
    out, lse = output
    ctx.save_for_backward(q, kv, out, lse, key_lengths)
    ctx.num_heads = num_heads
    ctx.mark_non_differentiable(lse)


def _backward_cross(ctx, grad_out, _grad_lse):
    q, kv, out, lse, key_lengths = ctx.saved_tensors
    dq, dkv = torch.ops.recon_fast.triton_cross_attention_backward(
        _grad_or_zeros(grad_out, out), q, kv, out, lse, ctx.num_heads, key_lengths)
    return dq, dkv, None, None


def _setup_recon(ctx, inputs, output):
    qkv, q_cross, kv_cross, num_heads, key_lengths = inputs
    self_out, self_lse, cross_out, cross_lse = output
    ctx.save_for_backward(qkv, q_cross, kv_cross, self_out, self_lse, cross_out, cross_lse, key_lengths)
    ctx.num_heads = num_heads
    ctx.mark_non_differentiable(self_lse, cross_lse)


def _backward_recon(ctx, grad_self, _grad_self_lse, grad_cross, _grad_cross_lse):
    qkv, q_cross, kv_cross, self_out, self_lse, cross_out, cross_lse, key_lengths = ctx.saved_tensors
    dqkv, dq, dkv = torch.ops.recon_fast.triton_recon_attention_backward(
        _grad_or_zeros(grad_self, self_out), _grad_or_zeros(grad_cross, cross_out), qkv, q_cross,
        kv_cross, self_out, self_lse, cross_out, cross_lse, ctx.num_heads, key_lengths)
    return dqkv, dq, dkv, None, None


_triton_self.register_autograd(_backward_self, setup_context=_setup_self)
_triton_cross.register_autograd(_backward_cross, setup_context=_setup_cross)
_triton_recon.register_autograd(_backward_recon, setup_context=_setup_recon)


# ---------------------------------------------------------------------------------------------
# SDPA and eager backends
# ---------------------------------------------------------------------------------------------

def _split_heads(packed: torch.Tensor, parts: int, num_heads: int) -> torch.Tensor:
    B, T, width = packed.shape
    head_dim = width // (parts * num_heads)
    return packed.reshape(B, T, parts, num_heads, head_dim).permute(2, 0, 3, 1, 4)  # (P, B, H, T, D)


def _key_mask(key_lengths: Optional[torch.Tensor], T: int) -> Optional[torch.Tensor]:
    if key_lengths is None:
        return None
    keep = torch.arange(T, device=key_lengths.device)[None, :] < key_lengths[:, None]  # (B, T)
    return keep[:, None, None, :]  # (B, 1, 1, T)


def _attend(q, k, v, key_lengths, backend: str) -> torch.Tensor:
    """q (B, H, Tq, D), k/v (B, H, T, D) -> (B, Tq, H*D)."""
    mask = _key_mask(key_lengths, k.shape[2])
    if backend == "eager":
        attn = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
        if mask is not None:
            attn = attn.masked_fill(~mask, float("-inf"))
        out = attn.softmax(dim=-1) @ v
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    B, H, Tq, D = out.shape
    return out.transpose(1, 2).reshape(B, Tq, H * D)  # (B, Tq, C)


# ---------------------------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------------------------

def self_attention(qkv: torch.Tensor, num_heads: int, *, key_lengths: Optional[torch.Tensor] = None,
                   backend: str = "auto") -> torch.Tensor:
    """Multi-head self-attention from the packed qkv projection.

    Args:
        qkv: (B, T, 3C) output of the qkv Linear, laid out as (B, T, 3, H, D); any strides.
        num_heads: H; must divide C.
        key_lengths: optional (B,) integers in [1, T]; keys >= key_lengths[b] are ignored.
        backend: "auto", "triton", "sdpa" or "eager" (see the module docstring).

    Returns:
        (B, T, C) attention output with the heads merged, in qkv's dtype.
    """
    num_heads = _check_num_heads(num_heads)
    B, T, _, head_dim = _check_packed(qkv, "qkv", 3, num_heads)
    key_lengths = _check_key_lengths(key_lengths, B, T, qkv)
    backend = resolve_backend(backend, qkv, head_dim)
    if backend == "triton":
        return torch.ops.recon_fast.triton_self_attention(qkv, num_heads, key_lengths)[0]
    q, k, v = _split_heads(qkv, 3, num_heads)
    return _attend(q, k, v, key_lengths, backend)


def cross_attention(q: torch.Tensor, kv: torch.Tensor, num_heads: int, *,
                    key_lengths: Optional[torch.Tensor] = None, backend: str = "auto") -> torch.Tensor:
    """Multi-head cross-attention of queries to a packed key/value projection.

    Args:
        q: (B, Tq, C) output of the q Linear; any strides.
        kv: (B, T, 2C) output of the kv Linear, laid out as (B, T, 2, H, D); any strides. In ReCon
            pretraining its input is detached: gradients still reach the kv weights, not the tokens.
        num_heads: H; must divide C.
        key_lengths: optional (B,) integers in [1, T]; keys >= key_lengths[b] are ignored.
        backend: "auto", "triton", "sdpa" or "eager".

    Returns:
        (B, Tq, C) attention output with the heads merged.
    """
    num_heads = _check_num_heads(num_heads)
    T, head_dim = _check_cross(q, kv, num_heads)
    key_lengths = _check_key_lengths(key_lengths, q.shape[0], T, q)
    backend = resolve_backend(backend, q, head_dim)
    if backend == "triton":
        return torch.ops.recon_fast.triton_cross_attention(q, kv, num_heads, key_lengths)[0]
    (qh,) = _split_heads(q, 1, num_heads)
    k, v = _split_heads(kv, 2, num_heads)
    return _attend(qh, k, v, key_lengths, backend)


def recon_attention(qkv: torch.Tensor, q_cross: torch.Tensor, kv_cross: torch.Tensor, num_heads: int,
                    *, key_lengths: Optional[torch.Tensor] = None, backend: str = "auto"
                    ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Both attentions of a ReCon block: patch-token self-attention and global-query cross-attention.

    Args:
        qkv: (B, T, 3C) packed self-attention projection of the patch tokens.
        q_cross: (B, Tq, C) projection of the global queries (Tq = 3 in ReCon).
        kv_cross: (B, T, 2C) packed cross-attention key/value projection of the same tokens.
        num_heads, key_lengths, backend: as in :func:`self_attention` (key_lengths applies to both).

    Returns:
        (self_out (B, T, C), cross_out (B, Tq, C)). With the Triton backend both run in one launch
        forward and one launch backward.
    """
    num_heads = _check_num_heads(num_heads)
    B, T, _, _ = _check_packed(qkv, "qkv", 3, num_heads)
    T_cross, head_dim = _check_cross(q_cross, kv_cross, num_heads, "q_cross", "kv_cross")
    _check_same(qkv, "qkv", kv_cross, "kv_cross")
    if qkv.shape[2] != 3 * q_cross.shape[2] or T_cross != T:
        raise ValueError(f"qkv (B, T, 3C) and kv_cross (B, T, 2C) must describe the same tokens with "
                         f"C = {q_cross.shape[2]} (from q_cross): got qkv {tuple(qkv.shape)}, "
                         f"kv_cross {tuple(kv_cross.shape)}")
    key_lengths = _check_key_lengths(key_lengths, B, T, qkv)
    backend = resolve_backend(backend, qkv, head_dim)
    if backend == "triton":
        self_out, _, cross_out, _ = torch.ops.recon_fast.triton_recon_attention(
            qkv, q_cross, kv_cross, num_heads, key_lengths)
        return self_out, cross_out
    return (self_attention(qkv, num_heads, key_lengths=key_lengths, backend=backend),
            cross_attention(q_cross, kv_cross, num_heads, key_lengths=key_lengths, backend=backend))
