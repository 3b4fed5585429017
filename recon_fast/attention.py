"""Attention for the ReCon block with a switchable backend.

Both functions take the packed projection outputs the official modules produce and return the
heads merged back to (B, T, C), ready for the output projection:

* ``self_attention(qkv, num_heads)``: qkv (B, T, 3C) from ``Attention.qkv`` (laid out as
  (B, T, 3, H, D), the official reshape) -> (B, T, C).
* ``cross_attention(q, kv, num_heads)``: q (B, Tq, C) from ``CrossAttention.q``, kv (B, T, 2C)
  from ``CrossAttention.kv`` (laid out as (B, T, 2, H, D)) -> (B, Tq, C).

Softmax scale is head_dim ** -0.5. ``key_lengths`` (B,) optionally masks keys >= length
(ragged batches). Backends: "eager" (the reference maths, as the official code), "sdpa"
(torch.nn.functional.scaled_dot_product_attention), "auto" (the fastest available).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

BACKENDS = ("auto", "eager", "sdpa")


def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return "sdpa" if backend == "auto" else backend


def _split_heads(packed: torch.Tensor, parts: int, num_heads: int) -> torch.Tensor:
    B, T, width = packed.shape
    if width % (parts * num_heads):
        raise ValueError(f"the packed projection has width {width}, not divisible by "
                         f"{parts} x num_heads={num_heads}")
    head_dim = width // (parts * num_heads)
    return packed.reshape(B, T, parts, num_heads, head_dim).permute(2, 0, 3, 1, 4)  # (P, B, H, T, D)


def _key_mask(key_lengths, T: int, device) -> torch.Tensor | None:
    if key_lengths is None:
        return None
    keep = torch.arange(T, device=device)[None, :] < key_lengths.to(device)[:, None]  # (B, T)
    return keep[:, None, None, :]  # (B, 1, 1, T)


def _attend(q, k, v, key_lengths, backend: str) -> torch.Tensor:
    """q (B, H, Tq, D), k/v (B, H, T, D) -> (B, Tq, H*D)."""
    mask = _key_mask(key_lengths, k.shape[2], k.device)
    if backend == "eager":
        attn = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
        if mask is not None:
            attn = attn.masked_fill(~mask, float("-inf"))
        out = attn.softmax(dim=-1) @ v
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    B, H, Tq, D = out.shape
    return out.transpose(1, 2).reshape(B, Tq, H * D)


def self_attention(qkv: torch.Tensor, num_heads: int, *, key_lengths: torch.Tensor | None = None,
                   backend: str = "auto") -> torch.Tensor:
    """Multi-head self-attention from the packed qkv projection (B, T, 3C) -> (B, T, C)."""
    backend = _check_backend(backend)
    q, k, v = _split_heads(qkv, 3, num_heads)
    return _attend(q, k, v, key_lengths, backend)


def cross_attention(q: torch.Tensor, kv: torch.Tensor, num_heads: int, *,
                    key_lengths: torch.Tensor | None = None, backend: str = "auto") -> torch.Tensor:
    """Multi-head cross-attention of queries q (B, Tq, C) to packed kv (B, T, 2C) -> (B, Tq, C)."""
    backend = _check_backend(backend)
    (qh,) = _split_heads(q, 1, num_heads)
    k, v = _split_heads(kv, 2, num_heads)
    return _attend(qh, k, v, key_lengths, backend)
