"""Plain-PyTorch reference of the ReCon block's attention (shared by tests/ and bench/).

Written from the definition in float64: softmax(q k^T / sqrt(D)) v per (batch, head), with keys at
positions >= key_lengths[b] excluded, and the packed projection layouts of the official code
(qkv (B, T, 3, H, D), kv (B, T, 2, H, D)). Differentiable, so gradients come from autograd.
"""

from __future__ import annotations

import torch


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_lengths=None):
    """q (B, Tq, H, D), k/v (B, T, H, D) -> out (B, Tq, H*D), lse (B, H, Tq); all float64."""
    q, k, v = q.double(), k.double(), v.double()
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / q.shape[-1] ** 0.5  # (B, H, Tq, T)
    if key_lengths is not None:
        padded = torch.arange(k.shape[1], device=k.device)[None, :] >= torch.as_tensor(
            key_lengths, device=k.device)[:, None]  # (B, T)
        scores = scores.masked_fill(padded[:, None, None, :], float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)  # (B, H, Tq)
    out = torch.einsum("bhqk,bkhd->bqhd", torch.exp(scores - lse[..., None]), v)  # (B, Tq, H, D)
    return out.flatten(2), lse


def self_attention_reference(qkv: torch.Tensor, num_heads: int, key_lengths=None, return_lse=False):
    B, T, width = qkv.shape
    q, k, v = qkv.reshape(B, T, 3, num_heads, width // (3 * num_heads)).unbind(2)  # (B, T, H, D) each
    out, lse = _attention(q, k, v, key_lengths)
    return (out, lse) if return_lse else out


def cross_attention_reference(q: torch.Tensor, kv: torch.Tensor, num_heads: int, key_lengths=None,
                              return_lse=False):
    B, Tq, C = q.shape
    k, v = kv.reshape(B, kv.shape[1], 2, num_heads, C // num_heads).unbind(2)  # (B, T, H, D) each
    out, lse = _attention(q.reshape(B, Tq, num_heads, C // num_heads), k, v, key_lengths)
    return (out, lse) if return_lse else out
