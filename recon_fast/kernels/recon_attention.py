"""Fused multi-head attention for the ReCon block, forward and backward, in Triton.

A ReCon block runs two attentions over the same normalised patch tokens: self-attention of the
tokens (packed projection qkv (B, T, 3C) laid out as (B, T, 3, H, D)) and cross-attention of the
three global queries (q (B, Tq, C)) to them (packed kv (B, T, 2C) laid out as (B, T, 2, H, D)).
Both are the same maths on different pointers, so one launch can run both: every problem of a
launch is a *role* (queries attending to keys/values), and the grid covers the roles side by side.

Forward: a program owns one block of queries of one (batch, head) and streams over the keys in
blocks with an online softmax in fp32 (fp64 for fp64 inputs), saving the log-sum-exp of every
query row. With the token counts of ReCon (26 in pretraining, up to 513 in finetuning) a whole
key sequence is one to nine blocks.

Backward: the probabilities are recomputed from the saved log-sum-exp, so the attention matrix
is never stored. When all keys fit one block (pretraining) one program per (batch, head, role)
walks the query blocks and writes dK, dV and dQ once. Longer sequences (finetuning's 129-515
tokens) are split FlashAttention-2 style so that the grid grows with the sequence: a pre-pass
computes delta = rowsum(dO * O); then, in one launch, a program per (batch, head, role, key block)
walks the query blocks for that block's dK, dV, and a program per (batch, head, role, query block)
walks the key blocks for that block's dQ. Every gradient row has one writer that sums in a fixed
order: no atomics, deterministic. BackwardPlan gives the grids.

q, k and v are read straight from the packed projection outputs through their strides: no
permute or contiguous copies. Keys at positions >= key_lengths[b] are masked (ragged batches).

CPU tensors run under the Triton interpreter. Triton fixes the mode for the whole process when
``triton.language`` is imported (its reductions are themselves jitted functions), so TRITON_INTERPRET=1
must be set before the first ``import triton``; `INTERPRETED` tells which mode this process got.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction
from triton.runtime.jit import JITFunction

from recon_fast.ops.validate import accumulation_dtype

# True when triton.language was imported under TRITON_INTERPRET=1: kernels then run on the host
# (CPU tensors work, CUDA tensors are copied to the host and back).
INTERPRETED = not isinstance(tl.sum, JITFunction)

# Softmax in base 2: exp(x) == exp2(x * log2(e)) and exp2 is the fast hardware instruction.
LOG2E_VALUE = 1.4426950408889634
LOG2E = tl.constexpr(LOG2E_VALUE)  # kernels may only read constexpr globals
# Largest tiles per input element size: (query block, forward key block when the whole sequence
# fits it, key block otherwise and in the backward). 16-bit inputs run on tensor cores: 64 x 64
# tiles keep the backward's five live tiles (k, v, dk, dv, scores) in registers, and up to 128
# keys run the forward softmax in one step (finetuning's 128 tokens). fp32 (IEEE) and fp64 dots
# run on FMA units with twice the registers per element, so their tiles are smaller. Checked with
# ptxas (tests/triton_compile.py): no spills on sm_90; on sm_80 the 16-bit backward at 64 x 64
# spills 8 bytes.
BLOCK_CAPS = {2: (64, 128, 64), 4: (32, 32, 32), 8: (32, 32, 32)}
# tl.dot needs every tile dimension >= 16.
MIN_BLOCK = 16
# Largest head dimension one program keeps in registers.
MAX_HEAD_DIM = 256
# The backward splits its work over key blocks and query blocks from this many key blocks on
# (BackwardPlan): one program per (batch, head) would leave most SMs idle at B32 with 3-6 heads.
SPLIT_FROM_KEY_BLOCKS = 2


# ---------------------------------------------------------------------------------------------
# Triton functions
# ---------------------------------------------------------------------------------------------

def _jit(fn):
    """triton.jit in the mode triton.language was imported in (not the mode the environment says
    now), so that the kernels and the reductions they call always agree."""
    return InterpretedFunction(fn) if INTERPRETED else JITFunction(fn)


@_jit
def _dot(a, b, ACC_DTYPE: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """a @ b accumulated in ACC_DTYPE.

    UPCAST widens bf16 operands to fp32 first: Triton 3.8's interpreter multiplies bf16 operands
    as their raw 16-bit patterns. The widening is exact, so the products match a bf16 tensor-core dot.
    """
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, input_precision=PRECISION, out_dtype=ACC_DTYPE)


@_jit
def _key_length(KEY_LENGTHS, b, kv_len, HAS_LENGTHS: tl.constexpr):
    """Sample b's number of keys, clamped to [0, kv_len] so that unchecked lengths can never read
    outside the key tensors."""
    key_len = kv_len
    if HAS_LENGTHS:
        key_len = tl.minimum(tl.maximum(tl.load(KEY_LENGTHS + b).to(tl.int32), 0), kv_len)
    return key_len


@_jit
def _attention_fwd_tile(
    Q, K, V, O, LSE, b, h, block, num_heads, q_len, key_len,
    stride_qb, stride_qt, stride_qh, stride_qd,
    stride_kb, stride_kt, stride_kh, stride_kd,
    scale_log2,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, HEAD_DIM: tl.constexpr,
    ACC_DTYPE: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):
    """One block of BLOCK_M query rows of one (batch, head) against keys [0, key_len)."""
    b64 = b.to(tl.int64)
    offs_m = block * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < q_len
    d_ok = offs_d < HEAD_DIM

    q_ptrs = Q + b64 * stride_qb + h * stride_qh + offs_m[:, None] * stride_qt + offs_d[None, :] * stride_qd
    q = tl.load(q_ptrs, mask=m_ok[:, None] & d_ok[None, :], other=0.0)  # (M, D)
    k_base = K + b64 * stride_kb + h * stride_kh
    v_base = V + b64 * stride_kb + h * stride_kh

    row_max = tl.full([BLOCK_M], float("-inf"), ACC_DTYPE)  # running max, log2 units
    row_sum = tl.zeros([BLOCK_M], ACC_DTYPE)
    acc = tl.zeros([BLOCK_M, BLOCK_D], ACC_DTYPE)
    for start_n in range(0, key_len, BLOCK_N):  # padded keys beyond key_len are never read
        n_ok = (start_n + offs_n) < key_len
        kv_offs = (start_n + offs_n)[:, None] * stride_kt + offs_d[None, :] * stride_kd
        kv_mask = n_ok[:, None] & d_ok[None, :]
        k = tl.load(k_base + kv_offs, mask=kv_mask, other=0.0)  # (N, D)
        scores = _dot(q, tl.trans(k), ACC_DTYPE, PRECISION, UPCAST) * scale_log2
        scores = tl.where(n_ok[None, :], scores, float("-inf"))  # (M, N)
        new_max = tl.maximum(row_max, tl.max(scores, 1))
        rescale = tl.exp2(row_max - new_max)  # 0 on the first block (row_max = -inf)
        p = tl.exp2(scores - new_max[:, None])
        row_sum = row_sum * rescale + tl.sum(p, 1)
        v = tl.load(v_base + kv_offs, mask=kv_mask, other=0.0)  # (N, D)
        acc = acc * rescale[:, None] + _dot(p.to(v.dtype), v, ACC_DTYPE, PRECISION, UPCAST)
        row_max = new_max

    # A row without keys (key_len == 0) gets output 0 and log-sum-exp -inf instead of NaN.
    has_keys = row_sum > 0
    out = acc / tl.where(has_keys, row_sum, 1.0)[:, None]
    width = num_heads * HEAD_DIM
    o_ptrs = O + (b64 * q_len + offs_m[:, None]) * width + h * HEAD_DIM + offs_d[None, :]
    tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=m_ok[:, None] & d_ok[None, :])
    lse = tl.where(has_keys, row_max / LOG2E + tl.log(tl.where(has_keys, row_sum, 1.0)),
                   float("-inf"))
    tl.store(LSE + (b64 * num_heads + h) * q_len + offs_m, lse, mask=m_ok)


@_jit
def _attention_fwd_kernel(
    Q_A, K_A, V_A, O_A, LSE_A, q_len_a,
    stride_qb_a, stride_qt_a, stride_qh_a, stride_qd_a,
    stride_kb_a, stride_kt_a, stride_kh_a, stride_kd_a,
    Q_B, K_B, V_B, O_B, LSE_B, q_len_b,
    stride_qb_b, stride_qt_b, stride_qh_b, stride_qd_b,
    stride_kb_b, stride_kt_b, stride_kh_b, stride_kd_b,
    KEY_LENGTHS, kv_len, num_heads, blocks_a, scale_log2,
    HAS_B: tl.constexpr, HAS_LENGTHS: tl.constexpr,
    BLOCK_M_A: tl.constexpr, BLOCK_M_B: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, HEAD_DIM: tl.constexpr, ACC_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    """Grid (B * H, blocks of role A + blocks of role B): roles A and B side by side."""
    bh = tl.program_id(0)
    block = tl.program_id(1)
    b = bh // num_heads
    h = bh % num_heads
    key_len = _key_length(KEY_LENGTHS, b, kv_len, HAS_LENGTHS)
    in_role_b = False
    if HAS_B:  # compile-time: single-role launches carry no role-B code
        in_role_b = block >= blocks_a
    if in_role_b:
        _attention_fwd_tile(Q_B, K_B, V_B, O_B, LSE_B, b, h, block - blocks_a, num_heads, q_len_b,
                            key_len, stride_qb_b, stride_qt_b, stride_qh_b, stride_qd_b,
                            stride_kb_b, stride_kt_b, stride_kh_b, stride_kd_b, scale_log2,
                            BLOCK_M_B, BLOCK_N, BLOCK_D, HEAD_DIM, ACC_DTYPE, PRECISION, UPCAST)
    else:
        _attention_fwd_tile(Q_A, K_A, V_A, O_A, LSE_A, b, h, block, num_heads, q_len_a,
                            key_len, stride_qb_a, stride_qt_a, stride_qh_a, stride_qd_a,
                            stride_kb_a, stride_kt_a, stride_kh_a, stride_kd_a, scale_log2,
                            BLOCK_M_A, BLOCK_N, BLOCK_D, HEAD_DIM, ACC_DTYPE, PRECISION, UPCAST)


@_jit
def _attention_bwd_key_block(
    Q, K, V, O, DO, LSE, DELTA, DQ, DK, DV, b64, h, start_n, num_heads, q_len, kv_len, key_len,
    stride_qb, stride_qt, stride_qh, stride_qd,
    stride_kb, stride_kt, stride_kh, stride_kd,
    stride_dqb, stride_dqt, stride_dkb, stride_dkt,
    scale, scale_log2,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, HEAD_DIM: tl.constexpr,
    ACC_DTYPE: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    SPLIT: tl.constexpr, DQ_ACCUMULATE: tl.constexpr,
):
    """dK, dV of the keys [start_n, start_n + BLOCK_N) of one (batch, head), over every query block.

    SPLIT: delta comes from the pre-pass and dQ is left to the query-block programs. Otherwise
    delta is recomputed from O and dO, and this block's share of dQ is stored (DQ_ACCUMULATE: added
    to what the earlier key blocks of the same program stored)."""
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    width = num_heads * HEAD_DIM
    # Pointer arithmetic as ptxas liked it best (fewest registers, sm_90, triton 3.6 and 3.8): q, k
    # and v from a scalar base pointer plus 32-bit tile offsets, O and dO through one shared
    # offset tile.
    q_base = Q + b64 * stride_qb + h * stride_qh
    o_offset = b64 * q_len * width + h * HEAD_DIM  # O and DO are contiguous (B, Tq, C)
    row_offset = (b64 * num_heads + h) * q_len  # LSE and DELTA are (B, H, Tq)
    lse_base = LSE + row_offset
    delta_base = DELTA + row_offset
    dq_base = DQ + b64 * stride_dqb + h * HEAD_DIM

    n_idx = start_n + tl.arange(0, BLOCK_N)
    n_ok = n_idx < key_len
    kv_offs = n_idx[:, None] * stride_kt + offs_d[None, :] * stride_kd
    kv_mask = n_ok[:, None] & d_ok[None, :]
    k = tl.load(K + b64 * stride_kb + h * stride_kh + kv_offs, mask=kv_mask, other=0.0)  # (N, D)
    v = tl.load(V + b64 * stride_kb + h * stride_kh + kv_offs, mask=kv_mask, other=0.0)  # (N, D)
    dk = tl.zeros([BLOCK_N, BLOCK_D], ACC_DTYPE)
    dv = tl.zeros([BLOCK_N, BLOCK_D], ACC_DTYPE)
    # A block of padded keys only writes its zero gradients, unless it must store dQ zeros too.
    q_end = q_len
    if SPLIT:
        q_end = tl.where(start_n < key_len, q_len, 0)
    for start_m in range(0, q_end, BLOCK_M):
        m_idx = start_m + offs_m
        m_ok = m_idx < q_len
        md_mask = m_ok[:, None] & d_ok[None, :]
        q = tl.load(q_base + m_idx[:, None] * stride_qt + offs_d[None, :] * stride_qd,
                    mask=md_mask, other=0.0)  # (M, D)
        o_offs = o_offset + m_idx[:, None] * width + offs_d[None, :]
        do = tl.load(DO + o_offs, mask=md_mask, other=0.0)  # (M, D)
        if SPLIT:
            delta = tl.load(delta_base + m_idx, mask=m_ok, other=0.0)  # (M,)
        else:
            # delta_i = sum_j P_ij dP_ij = dO_i . O_i, recomputed here instead of a pre-pass.
            o = tl.load(O + o_offs, mask=md_mask, other=0.0)
            delta = tl.sum(do.to(ACC_DTYPE) * o.to(ACC_DTYPE), 1)
        lse_log2 = tl.load(lse_base + m_idx, mask=m_ok, other=0.0) * LOG2E
        scores = _dot(q, tl.trans(k), ACC_DTYPE, PRECISION, UPCAST) * scale_log2
        p = tl.where(m_ok[:, None] & n_ok[None, :], tl.exp2(scores - lse_log2[:, None]), 0.0)
        dv += _dot(tl.trans(p.to(do.dtype)), do, ACC_DTYPE, PRECISION, UPCAST)
        dp = _dot(do, tl.trans(v), ACC_DTYPE, PRECISION, UPCAST)  # (M, N)
        ds = p * (dp - delta[:, None])  # gradient of the scaled scores
        dk += _dot(tl.trans(ds.to(q.dtype)), q, ACC_DTYPE, PRECISION, UPCAST)
        if not SPLIT:
            dq = _dot(ds.to(k.dtype), k, ACC_DTYPE, PRECISION, UPCAST) * scale
            dq_ptrs = dq_base + m_idx[:, None] * stride_dqt + offs_d[None, :]
            if DQ_ACCUMULATE:
                # Only this program touches these rows, in key-block order: a plain read-add-write.
                dq += tl.load(dq_ptrs, mask=md_mask & (start_n > 0), other=0.0)
            tl.store(dq_ptrs, dq.to(DQ.dtype.element_ty), mask=md_mask)
    dkv_base = b64 * stride_dkb + h * HEAD_DIM
    dkv_offs = n_idx[:, None] * stride_dkt + offs_d[None, :]
    dkv_mask = (n_idx < kv_len)[:, None] & d_ok[None, :]
    tl.store(DK + dkv_base + dkv_offs, (dk * scale).to(DK.dtype.element_ty), mask=dkv_mask)
    tl.store(DV + dkv_base + dkv_offs, dv.to(DV.dtype.element_ty), mask=dkv_mask)


@_jit
def _attention_bwd_query_block(
    Q, K, V, DO, LSE, DELTA, DQ, b64, h, block, num_heads, q_len, key_len,
    stride_qb, stride_qt, stride_qh, stride_qd,
    stride_kb, stride_kt, stride_kh, stride_kd,
    stride_dqb, stride_dqt,
    scale, scale_log2,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, HEAD_DIM: tl.constexpr,
    ACC_DTYPE: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):
    """dQ of one block of BLOCK_M query rows of one (batch, head), summed in registers over the
    key blocks in order and written once (deterministic, no scratch)."""
    offs_m = block * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < q_len
    d_ok = offs_d < HEAD_DIM
    md_mask = m_ok[:, None] & d_ok[None, :]
    width = num_heads * HEAD_DIM
    q = tl.load(Q + b64 * stride_qb + h * stride_qh + offs_m[:, None] * stride_qt
                + offs_d[None, :] * stride_qd, mask=md_mask, other=0.0)  # (M, D)
    do = tl.load(DO + b64 * q_len * width + h * HEAD_DIM + offs_m[:, None] * width + offs_d[None, :],
                 mask=md_mask, other=0.0)  # (M, D)
    row_offs = (b64 * num_heads + h) * q_len + offs_m
    lse_log2 = tl.load(LSE + row_offs, mask=m_ok, other=0.0) * LOG2E
    delta = tl.load(DELTA + row_offs, mask=m_ok, other=0.0)
    k_base = K + b64 * stride_kb + h * stride_kh
    v_base = V + b64 * stride_kb + h * stride_kh
    dq = tl.zeros([BLOCK_M, BLOCK_D], ACC_DTYPE)
    for start_n in range(0, key_len, BLOCK_N):  # padded keys add nothing to dQ
        n_ok = (start_n + offs_n) < key_len
        kv_offs = (start_n + offs_n)[:, None] * stride_kt + offs_d[None, :] * stride_kd
        k = tl.load(k_base + kv_offs, mask=n_ok[:, None] & d_ok[None, :], other=0.0)  # (N, D)
        v = tl.load(v_base + kv_offs, mask=n_ok[:, None] & d_ok[None, :], other=0.0)  # (N, D)
        scores = _dot(q, tl.trans(k), ACC_DTYPE, PRECISION, UPCAST) * scale_log2
        p = tl.where(m_ok[:, None] & n_ok[None, :], tl.exp2(scores - lse_log2[:, None]), 0.0)
        dp = _dot(do, tl.trans(v), ACC_DTYPE, PRECISION, UPCAST)  # (M, N)
        ds = p * (dp - delta[:, None])
        dq += _dot(ds.to(k.dtype), k, ACC_DTYPE, PRECISION, UPCAST)
    dq_ptrs = DQ + b64 * stride_dqb + h * HEAD_DIM + offs_m[:, None] * stride_dqt + offs_d[None, :]
    tl.store(dq_ptrs, (dq * scale).to(DQ.dtype.element_ty), mask=md_mask)


@_jit
def _attention_bwd_role(
    Q, K, V, O, DO, LSE, DELTA, DQ, DK, DV, b, h, slot, num_heads, q_len, kv_len, key_len, key_blocks,
    stride_qb, stride_qt, stride_qh, stride_qd,
    stride_kb, stride_kt, stride_kh, stride_kd,
    stride_dqb, stride_dqt, stride_dkb, stride_dkt,
    scale, scale_log2,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, HEAD_DIM: tl.constexpr,
    ACC_DTYPE: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    SPLIT: tl.constexpr, DQ_ACCUMULATE: tl.constexpr,
):
    """Program `slot` of one (batch, head) of a role. SPLIT: slots [0, key_blocks) own one key
    block each (dK, dV), the slots after them one query block each (dQ). Otherwise the one slot
    walks every key block, dQ included."""
    b64 = b.to(tl.int64)
    owns_queries = False
    if SPLIT:
        owns_queries = slot >= key_blocks
    if owns_queries:
        _attention_bwd_query_block(Q, K, V, DO, LSE, DELTA, DQ, b64, h, slot - key_blocks, num_heads,
                                   q_len, key_len, stride_qb, stride_qt, stride_qh, stride_qd,
                                   stride_kb, stride_kt, stride_kh, stride_kd, stride_dqb, stride_dqt,
                                   scale, scale_log2, BLOCK_M, BLOCK_N, BLOCK_D, HEAD_DIM, ACC_DTYPE,
                                   PRECISION, UPCAST)
    else:
        first = 0
        last = kv_len  # every key block, padded ones too, so that every dK/dV row is written
        if SPLIT:
            first = slot * BLOCK_N
            last = first + 1
        for start_n in range(first, last, BLOCK_N):
            _attention_bwd_key_block(Q, K, V, O, DO, LSE, DELTA, DQ, DK, DV, b64, h, start_n,
                                     num_heads, q_len, kv_len, key_len,
                                     stride_qb, stride_qt, stride_qh, stride_qd,
                                     stride_kb, stride_kt, stride_kh, stride_kd,
                                     stride_dqb, stride_dqt, stride_dkb, stride_dkt, scale, scale_log2,
                                     BLOCK_M, BLOCK_N, BLOCK_D, HEAD_DIM, ACC_DTYPE, PRECISION, UPCAST,
                                     SPLIT, DQ_ACCUMULATE)


@_jit
def _attention_bwd_kernel(
    Q_A, K_A, V_A, O_A, DO_A, LSE_A, DELTA_A, DQ_A, DK_A, DV_A, q_len_a,
    stride_qb_a, stride_qt_a, stride_qh_a, stride_qd_a,
    stride_kb_a, stride_kt_a, stride_kh_a, stride_kd_a,
    stride_dqb_a, stride_dqt_a, stride_dkb_a, stride_dkt_a,
    Q_B, K_B, V_B, O_B, DO_B, LSE_B, DELTA_B, DQ_B, DK_B, DV_B, q_len_b,
    stride_qb_b, stride_qt_b, stride_qh_b, stride_qd_b,
    stride_kb_b, stride_kt_b, stride_kh_b, stride_kd_b,
    stride_dqb_b, stride_dqt_b, stride_dkb_b, stride_dkt_b,
    KEY_LENGTHS, kv_len, num_heads, key_blocks, slots, slots_a, scale, scale_log2,
    HAS_B: tl.constexpr, HAS_LENGTHS: tl.constexpr,
    BLOCK_M_A: tl.constexpr, BLOCK_M_B: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, HEAD_DIM: tl.constexpr, ACC_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
    UPCAST: tl.constexpr, SPLIT: tl.constexpr, DQ_ACCUMULATE: tl.constexpr,
):
    """Grid (B * H * slots,): the slots of one (batch, head), role A's then role B's, are
    neighbours in launch order (they share that head's q, k, v and dO in L2); see BackwardPlan."""
    pid = tl.program_id(0)
    bh = pid // slots
    slot = pid % slots
    b = bh // num_heads
    h = bh % num_heads
    key_len = _key_length(KEY_LENGTHS, b, kv_len, HAS_LENGTHS)
    in_role_b = False
    if HAS_B:
        in_role_b = slot >= slots_a
    if in_role_b:
        _attention_bwd_role(Q_B, K_B, V_B, O_B, DO_B, LSE_B, DELTA_B, DQ_B, DK_B, DV_B, b, h,
                            slot - slots_a, num_heads, q_len_b, kv_len, key_len, key_blocks,
                            stride_qb_b, stride_qt_b, stride_qh_b, stride_qd_b,
                            stride_kb_b, stride_kt_b, stride_kh_b, stride_kd_b,
                            stride_dqb_b, stride_dqt_b, stride_dkb_b, stride_dkt_b, scale, scale_log2,
                            BLOCK_M_B, BLOCK_N, BLOCK_D, HEAD_DIM, ACC_DTYPE, PRECISION, UPCAST,
                            SPLIT, DQ_ACCUMULATE)
    else:
        _attention_bwd_role(Q_A, K_A, V_A, O_A, DO_A, LSE_A, DELTA_A, DQ_A, DK_A, DV_A, b, h,
                            slot, num_heads, q_len_a, kv_len, key_len, key_blocks,
                            stride_qb_a, stride_qt_a, stride_qh_a, stride_qd_a,
                            stride_kb_a, stride_kt_a, stride_kh_a, stride_kd_a,
                            stride_dqb_a, stride_dqt_a, stride_dkb_a, stride_dkt_a, scale, scale_log2,
                            BLOCK_M_A, BLOCK_N, BLOCK_D, HEAD_DIM, ACC_DTYPE, PRECISION, UPCAST,
                            SPLIT, DQ_ACCUMULATE)


@_jit
def _attention_delta_tile(O, DO, DELTA, b64, h, block, num_heads, q_len,
                          BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, HEAD_DIM: tl.constexpr,
                          ACC_DTYPE: tl.constexpr):
    """delta = rowsum(dO * O) of one block of query rows of one (batch, head)."""
    offs_m = block * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < q_len
    mask = m_ok[:, None] & (offs_d < HEAD_DIM)[None, :]
    offs = (b64 * q_len + offs_m[:, None]) * (num_heads * HEAD_DIM) + h * HEAD_DIM + offs_d[None, :]
    o = tl.load(O + offs, mask=mask, other=0.0).to(ACC_DTYPE)
    do = tl.load(DO + offs, mask=mask, other=0.0).to(ACC_DTYPE)
    tl.store(DELTA + (b64 * num_heads + h) * q_len + offs_m, tl.sum(do * o, 1), mask=m_ok)


@_jit
def _attention_delta_kernel(
    O_A, DO_A, DELTA_A, q_len_a, O_B, DO_B, DELTA_B, q_len_b, num_heads, blocks_a,
    HAS_B: tl.constexpr, BLOCK_M_A: tl.constexpr, BLOCK_M_B: tl.constexpr, BLOCK_D: tl.constexpr,
    HEAD_DIM: tl.constexpr, ACC_DTYPE: tl.constexpr,
):
    """The split backward's pre-pass. Grid (B * H, query blocks of role A + of role B)."""
    bh = tl.program_id(0)
    block = tl.program_id(1)
    b64 = (bh // num_heads).to(tl.int64)
    h = bh % num_heads
    in_role_b = False
    if HAS_B:
        in_role_b = block >= blocks_a
    if in_role_b:
        _attention_delta_tile(O_B, DO_B, DELTA_B, b64, h, block - blocks_a, num_heads, q_len_b,
                              BLOCK_M_B, BLOCK_D, HEAD_DIM, ACC_DTYPE)
    else:
        _attention_delta_tile(O_A, DO_A, DELTA_A, b64, h, block, num_heads, q_len_a,
                              BLOCK_M_A, BLOCK_D, HEAD_DIM, ACC_DTYPE)


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------

@dataclass
class Role:
    """One attention problem of a launch: queries q attending to keys k / values v.

    q: (B, Tq, H, D), k and v: (B, T, H, D), any strides (views into the packed projections);
    k and v must share their strides (two slices of one packed tensor).
    """

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor


def _next_pow2(n: int, low: int = MIN_BLOCK) -> int:
    return max(low, triton.next_power_of_2(max(n, 1)))




def _precision(dtype: torch.dtype) -> str:
    """fp32 inputs use TF32 tensor cores only when torch's matmuls are allowed to (same numbers)."""
    if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


def _acc_tl(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _common_meta(q_lens: Sequence[int], block_n: int, head_dim: int, dtype: torch.dtype) -> dict:
    block_q = BLOCK_CAPS[dtype.itemsize][0]
    blocks_m = [min(_next_pow2(n), block_q) for n in q_lens]
    return dict(BLOCK_M_A=blocks_m[0], BLOCK_M_B=blocks_m[-1], BLOCK_N=block_n,
                BLOCK_D=_next_pow2(head_dim), HEAD_DIM=head_dim, ACC_DTYPE=_acc_tl(dtype),
                PRECISION=_precision(dtype), UPCAST=INTERPRETED and dtype == torch.bfloat16,
                HAS_B=len(q_lens) == 2)


def forward_meta(q_lens: Sequence[int], kv_len: int, head_dim: int, dtype: torch.dtype) -> dict:
    """Compile-time parameters of the forward kernel for the roles' query counts."""
    _, whole, streamed = BLOCK_CAPS[dtype.itemsize]
    block_n = _next_pow2(kv_len) if _next_pow2(kv_len) <= whole else streamed
    return _common_meta(q_lens, block_n, head_dim, dtype)


def backward_meta(q_lens: Sequence[int], kv_len: int, head_dim: int, dtype: torch.dtype) -> dict:
    """Compile-time parameters of the backward kernel for the roles' query counts."""
    block_n = min(_next_pow2(kv_len), BLOCK_CAPS[dtype.itemsize][2])
    split = triton.cdiv(kv_len, block_n) >= SPLIT_FROM_KEY_BLOCKS
    return dict(_common_meta(q_lens, block_n, head_dim, dtype), SPLIT=split,
                DQ_ACCUMULATE=not split and kv_len > block_n)


@dataclass(frozen=True)
class BackwardPlan:
    """The grids of a backward: `delta_grid` (B * H, query blocks of all roles) for the pre-pass
    (None when there is none) and `grid` (B * H * slots,) for the gradient kernel, `slots` being
    the programs of one (batch, head): role A's, then role B's.

    Split (SPLIT_FROM_KEY_BLOCKS or more key blocks): a role has one slot per key block (its dK and
    dV, walking the query blocks) and then one per query block (its dQ, walking the key blocks), so
    the grid grows with the sequence; every gradient row has one writer and a fixed summation order
    (deterministic, no atomics). The price: the scores and dP are computed twice, and a pre-pass
    computes delta = rowsum(dO * O) once per query row. Unsplit: one slot per role walks every
    key block, dQ written once when the keys fit one block (pretraining), otherwise accumulated
    in place by that program."""

    key_blocks: int
    query_blocks: Tuple[int, ...]
    split: bool
    batch_heads: int  # B * H
    delta_grid: Optional[Tuple[int, int]]

    def role_slots(self, role: int) -> int:
        return self.key_blocks + self.query_blocks[role] if self.split else 1

    @property
    def slots(self) -> int:
        return sum(self.role_slots(role) for role in range(len(self.query_blocks)))

    @property
    def grid(self) -> Tuple[int]:
        return (self.batch_heads * self.slots,)

    @property
    def programs(self) -> int:
        """Programs of the gradient kernel (the pre-pass is a short streaming pass)."""
        return self.grid[0]


def backward_plan(batch: int, heads: int, q_lens: Sequence[int], kv_len: int, head_dim: int,
                  dtype: torch.dtype) -> BackwardPlan:
    """The launch plan of the backward of roles with `q_lens` queries over `kv_len` keys."""
    meta = backward_meta(q_lens, kv_len, head_dim, dtype)
    key_blocks = triton.cdiv(kv_len, meta["BLOCK_N"])
    query_blocks = tuple(triton.cdiv(n, meta[name]) for n, name in zip(q_lens, ("BLOCK_M_A", "BLOCK_M_B")))
    split = meta["SPLIT"]
    delta_grid = (batch * heads, sum(query_blocks)) if split else None
    return BackwardPlan(key_blocks, query_blocks, split, batch * heads, delta_grid)


def _launch_options(meta: dict, dtype: torch.dtype, backward: bool) -> dict:
    """Warps and pipelining picked with ptxas (tests/triton_compile.py) so that the ReCon shapes do
    not spill registers on sm_90: the backward keeps five tiles live, fp32/fp64 tiles are twice as
    wide."""
    wide = dtype in (torch.float32, torch.float64)
    if backward:  # the split backward's programs hold the same tiles, fewer of them at once
        return dict(num_warps=8 if wide or meta["BLOCK_N"] >= 64 else 4, num_stages=1)
    big = max(meta["BLOCK_M_A"], meta["BLOCK_M_B"]) * meta["BLOCK_N"] >= 64 * 128
    return dict(num_warps=8 if wide or big else 4, num_stages=2)


def _lengths_arg(key_lengths: Optional[torch.Tensor], like: torch.Tensor) -> Tuple[torch.Tensor, bool]:
    if key_lengths is None:
        return like, False  # never read: HAS_LENGTHS is False
    return key_lengths, True


def _q_strides(t: torch.Tensor) -> List[int]:
    return list(t.stride())  # (b, t, h, d)


def _check_roles(roles: Sequence[Role]) -> None:
    if not 1 <= len(roles) <= 2:
        raise ValueError(f"a launch runs one or two attention roles, got {len(roles)}")
    B, T, H, D = roles[0].k.shape
    if D > MAX_HEAD_DIM:
        raise ValueError(f"head_dim must be at most {MAX_HEAD_DIM}, got {D}")
    for role in roles:
        if role.k.stride() != role.v.stride() or role.k.shape != role.v.shape:
            raise ValueError("k and v of a role must be slices of one packed tensor (same shape "
                             f"and strides), got {role.k.stride()} and {role.v.stride()}")
        if role.k.shape != (B, T, H, D) or role.q.shape[0] != B or role.q.shape[2:] != (H, D):
            raise ValueError(f"roles disagree on (B, T, H, D) = {(B, T, H, D)}: q {tuple(role.q.shape)}, "
                             f"k {tuple(role.k.shape)}")


def _device_of(args: Sequence[object]):
    """A guard that makes the device of the first CUDA tensor in `args` current (a no-op for
    CPU tensors under the interpreter)."""
    for arg in args:
        if isinstance(arg, torch.Tensor) and arg.device.type == "cuda":
            return torch.cuda.device(arg.device)
    return contextlib.nullcontext()


@dataclass
class Launch:
    """One kernel launch: kernel[grid](*args, **kwargs) (kwargs: constexprs and launch options)."""

    kernel: object
    grid: Tuple[int, ...]
    args: list
    kwargs: dict

    def run(self) -> None:
        # Triton launches on the current CUDA device: make it the tensors' one (cuda:1 ...).
        with _device_of(self.args):
            self._launch()

    def _launch(self) -> None:
        if INTERPRETED and not triton.knobs.runtime.interpret:
            # The interpreter re-reads the knob while running (lazy imports, constexpr helpers):
            # keep it consistent with the mode triton.language was imported in.
            previous = os.environ.get("TRITON_INTERPRET")
            os.environ["TRITON_INTERPRET"] = "1"
            try:
                self.kernel[self.grid](*self.args, **self.kwargs)
            finally:
                if previous is None:
                    del os.environ["TRITON_INTERPRET"]
                else:
                    os.environ["TRITON_INTERPRET"] = previous
            return
        self.kernel[self.grid](*self.args, **self.kwargs)


def _forward_launch(roles: Sequence[Role], key_lengths: Optional[torch.Tensor], scale: float):
    """The forward launch for `roles` (None when there is nothing to compute) and its outputs."""
    _check_roles(roles)
    B, T, H, D = roles[0].k.shape
    dtype, device = roles[0].q.dtype, roles[0].q.device
    acc = accumulation_dtype(dtype)
    results = [(torch.empty(B, r.q.shape[1], H * D, dtype=dtype, device=device),
                torch.empty(B, H, r.q.shape[1], dtype=acc, device=device)) for r in roles]
    if B * H == 0:
        return None, results
    q_lens = [r.q.shape[1] for r in roles]
    meta = forward_meta(q_lens, T, D, dtype)
    blocks = [triton.cdiv(n, meta[name]) for n, name in zip(q_lens, ("BLOCK_M_A", "BLOCK_M_B"))]
    lengths, has_lengths = _lengths_arg(key_lengths, roles[0].q)
    role_args = []
    for role, (out, lse) in zip(roles, results):
        role_args += [role.q, role.k, role.v, out, lse, role.q.shape[1],
                      *_q_strides(role.q), *role.k.stride()]
    if len(roles) == 1:
        role_args *= 2  # the role-B slots of a single-role launch are never read
    args = role_args + [lengths, T, H, blocks[0], scale * LOG2E_VALUE]
    kwargs = dict(HAS_LENGTHS=has_lengths, **meta, **_launch_options(meta, dtype, backward=False))
    return Launch(_attention_fwd_kernel, (B * H, sum(blocks)), args, kwargs), results


def attention_forward(roles: Sequence[Role], key_lengths: Optional[torch.Tensor], scale: float
                      ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """Run one or two attention roles in one launch.

    Returns per role (out (B, Tq, H*D) in the input dtype, lse (B, H, Tq) in the accumulation
    dtype), lse being the natural log-sum-exp of each row of scaled scores.
    """
    launch, results = _forward_launch(roles, key_lengths, scale)
    if launch is not None:
        launch.run()
    return results


@dataclass
class RoleGrads:
    """Where the backward writes a role's gradients: views shaped like q, k and v whose last
    two dims are contiguous (H, D) (slices of the packed gradient tensors)."""

    dq: torch.Tensor
    dk: torch.Tensor
    dv: torch.Tensor


def _check_grads(grads: Sequence[RoleGrads]) -> None:
    for grad in grads:
        for name in ("dq", "dk", "dv"):
            t = getattr(grad, name)
            if t.stride(3) != 1 or t.stride(2) != t.shape[3]:
                raise ValueError(f"{name} must have contiguous (H, D) dims, got strides {t.stride()}")
        if grad.dk.stride() != grad.dv.stride():
            raise ValueError(f"dk and dv must share strides, got {grad.dk.stride()} and {grad.dv.stride()}")


def _backward_launches(roles, outs, lses, grad_outs, grads, key_lengths, scale):
    """The backward's launches in order (none when there is nothing to compute) and the
    (target, scratch) pairs to copy once they ran."""
    _check_roles(roles)
    _check_grads(grads)
    B, T, H, D = roles[0].k.shape
    dtype, device = roles[0].q.dtype, roles[0].q.device
    if B * H == 0:
        return [], []
    q_lens = [r.q.shape[1] for r in roles]
    meta = backward_meta(q_lens, T, D, dtype)
    plan = backward_plan(B, H, q_lens, T, D, dtype)
    acc = accumulation_dtype(dtype)
    lengths, has_lengths = _lengths_arg(key_lengths, roles[0].q)
    grad_outs = [g.contiguous() for g in grad_outs]
    # Unsplit launches never read delta: any tensor fills the slot.
    deltas = [torch.empty(B, H, n, dtype=acc, device=device) if plan.split else lse
              for n, lse in zip(q_lens, lses)]
    role_args, copies = [], []
    for role, out, lse, grad_out, delta, grad in zip(roles, outs, lses, grad_outs, deltas, grads):
        dq = grad.dq
        if meta["DQ_ACCUMULATE"] and dtype != acc:
            # dQ sums over key blocks in place: accumulate in float, round once at the end.
            dq = torch.empty(dq.shape, dtype=acc, device=device)
            copies.append((grad.dq, dq))
        role_args += [role.q, role.k, role.v, out, grad_out, lse, delta, dq, grad.dk, grad.dv,
                      role.q.shape[1], *_q_strides(role.q), *role.k.stride(),
                      dq.stride(0), dq.stride(1), grad.dk.stride(0), grad.dk.stride(1)]
    if len(roles) == 1:
        role_args *= 2  # the role-B slots of a single-role launch are never read
    args = role_args + [lengths, T, H, plan.key_blocks, plan.slots, plan.role_slots(0), scale,
                        scale * LOG2E_VALUE]
    kwargs = dict(HAS_LENGTHS=has_lengths, **meta, **_launch_options(meta, dtype, backward=True))
    launches = [Launch(_attention_bwd_kernel, plan.grid, args, kwargs)]
    if plan.split:
        launches.insert(0, _delta_launch(plan, meta, outs, grad_outs, deltas, q_lens, H))
    return launches, copies


def _delta_launch(plan: BackwardPlan, meta: dict, outs, grad_outs, deltas, q_lens, heads: int) -> Launch:
    role_args = []
    for out, grad_out, delta, q_len in zip(outs, grad_outs, deltas, q_lens):
        role_args += [out, grad_out, delta, q_len]
    if len(q_lens) == 1:
        role_args *= 2
    kwargs = {name: meta[name] for name in ("HAS_B", "BLOCK_M_A", "BLOCK_M_B", "BLOCK_D", "HEAD_DIM",
                                            "ACC_DTYPE")}
    return Launch(_attention_delta_kernel, plan.delta_grid, role_args + [heads, plan.query_blocks[0]],
                  dict(kwargs, num_warps=4, num_stages=1))


def attention_backward(roles: Sequence[Role], outs: Sequence[torch.Tensor], lses: Sequence[torch.Tensor],
                       grad_outs: Sequence[torch.Tensor], grads: Sequence[RoleGrads],
                       key_lengths: Optional[torch.Tensor], scale: float) -> None:
    """Gradients of one or two roles, written into `grads`: one gradient launch for both roles
    (after a delta pre-pass when the plan is split, see BackwardPlan).

    outs and lses are the forward results; grad_outs are the gradients of outs (any strides).
    """
    launches, copies = _backward_launches(roles, outs, lses, grad_outs, grads, key_lengths, scale)
    for launch in launches:
        launch.run()
    for target, scratch in copies:
        target.copy_(scratch)


def __getattr__(name: str):
    # Names this module used to hold: say where they live now.
    if name == "compile_check":
        raise AttributeError("compile_check (ahead-of-time compilation of the attention kernels "
                             "for an arch, no GPU needed) moved out of the kernel file to "
                             "tests/triton_compile.py in the recon_fast repository")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
