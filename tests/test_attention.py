"""ReCon block attention: Triton kernels vs a float64 plain-PyTorch reference, forward and backward.

On a machine without a GPU the Triton kernels run under the Triton interpreter (CPU tensors); the
same tests run the compiled kernels on CUDA tensors when a GPU is present.
"""

import json
import os
import subprocess
import sys

import pytest
import torch


from reference_attention import cross_attention_reference, self_attention_reference  # noqa: E402
from recon_fast import attention  # noqa: E402
from recon_fast.attention import cross_attention, recon_attention, self_attention  # noqa: E402

# (atol, rtol) against the float64 reference; atol scales with the largest reference value.
# Halves differ from it by input/output rounding and by rounding P and dS for the tensor-core dots.
TOL = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (2e-5, 1e-4),
    torch.float16: (3e-3, 3e-3),
    torch.bfloat16: (2.5e-2, 2e-2),
}
ALL = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


@pytest.fixture
def interpreter_flag(monkeypatch):
    """TRITON_INTERPRET=1 for one test (what a caller sets to allow Triton on CPU tensors)."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def triton_on(device):
    reason = attention.triton_unavailable_reason(device)
    if reason is not None:
        pytest.skip(reason)
    return device


def assert_near(actual, expected, dtype, what=""):
    atol, rtol = TOL[dtype]
    expected = expected.detach().double()
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    torch.testing.assert_close(actual.detach().cpu().double(), expected, atol=atol * scale, rtol=rtol,
                               msg=lambda m: f"{what} ({dtype})\n{m}")


def packed(shape, dtype, device, layout="contiguous"):
    """A random (B, T, W) tensor in the given memory layout, requiring grad (a view of a leaf)."""
    values = torch.randn(shape, dtype=torch.float64).to(dtype)
    B, T, W = shape
    if layout == "contiguous":
        base = values.clone()
        view = lambda t: t  # noqa: E731
    elif layout == "slice":  # the packed tensor is a column slice of a wider one
        base = torch.zeros(B, T, W + 40, dtype=dtype)
        base[..., 8:8 + W] = values
        view = lambda t: t[..., 8:8 + W]  # noqa: E731
    elif layout == "transposed":  # stored token-major (T, B, W)
        base = values.transpose(0, 1).contiguous()
        view = lambda t: t.transpose(0, 1)  # noqa: E731
    elif layout == "strided_last":  # every other element of the last dim
        base = torch.zeros(B, T, 2 * W, dtype=dtype)
        base[..., ::2] = values
        view = lambda t: t[..., ::2]  # noqa: E731
    else:
        raise AssertionError(layout)
    base = base.to(device).requires_grad_()
    return view(base)


def reference_copy(t):
    return t.detach().cpu().double().requires_grad_()


def run_recon(qkv, q, kv, heads, key_lengths=None, backend="triton", seed=1):
    """Outputs of the fused call and the gradients of a random linear loss w.r.t. its inputs."""
    self_out, cross_out = recon_attention(qkv, q, kv, heads, key_lengths=key_lengths, backend=backend)
    gen = torch.Generator().manual_seed(seed)
    g_self = torch.randn(self_out.shape, generator=gen, dtype=torch.float64)
    g_cross = torch.randn(cross_out.shape, generator=gen, dtype=torch.float64)
    grads = torch.autograd.grad(
        (self_out, cross_out), (qkv, q, kv),
        (g_self.to(self_out.dtype).to(self_out.device), g_cross.to(self_out.dtype).to(self_out.device)))
    return (self_out, cross_out), grads, (g_self.to(qkv.dtype).double(), g_cross.to(qkv.dtype).double())


def reference_recon(qkv, q, kv, heads, key_lengths, grad_outs):
    ref_inputs = [reference_copy(t) for t in (qkv, q, kv)]
    lengths = None if key_lengths is None else key_lengths.cpu()
    outs = (self_attention_reference(ref_inputs[0], heads, lengths),
            cross_attention_reference(ref_inputs[1], ref_inputs[2], heads, lengths))
    grads = torch.autograd.grad(outs, ref_inputs, grad_outs)
    return outs, grads


def check_recon(qkv, q, kv, heads, key_lengths=None, backend="triton"):
    outs, grads, grad_outs = run_recon(qkv, q, kv, heads, key_lengths, backend)
    ref_outs, ref_grads = reference_recon(qkv, q, kv, heads, key_lengths, grad_outs)
    dtype = qkv.dtype
    for got, want, name in zip(outs + grads, ref_outs + ref_grads,
                               ("self out", "cross out", "d qkv", "d q_cross", "d kv_cross")):
        assert got.dtype == dtype and got.shape == want.shape, name
        assert_near(got, want, dtype, name)
    return outs, grads


def recon_inputs(B, T, heads, head_dim, dtype, device, queries=3, layout="contiguous"):
    C = heads * head_dim
    return (packed((B, T, 3 * C), dtype, device, layout), packed((B, queries, C), dtype, device, layout),
            packed((B, T, 2 * C), dtype, device, layout))


# ---------------------------------------------------------------------------------------------
# Numerics against the reference
# ---------------------------------------------------------------------------------------------

SELF_CASES = [(torch.float32, T) for T in (1, 3, 26, 65, 128)] + [
    (dtype, T) for dtype in (torch.float64, torch.float16, torch.bfloat16) for T in (3, 26, 65)]


@pytest.mark.parametrize("dtype,T", SELF_CASES)
def test_self_attention_matches_reference(device, dtype, T):
    triton_on(device)
    heads, head_dim = 2, 64
    qkv = packed((2, T, 3 * heads * head_dim), dtype, device)
    out = self_attention(qkv, heads, backend="triton")
    grad_out = torch.randn(out.shape, dtype=torch.float64).to(dtype)
    (dqkv,) = torch.autograd.grad(out, qkv, grad_out.to(device))
    ref_in = reference_copy(qkv)
    ref = self_attention_reference(ref_in, heads)
    (ref_dqkv,) = torch.autograd.grad(ref, ref_in, grad_out.double())
    assert out.dtype == dtype and out.shape == (2, T, heads * head_dim)
    assert_near(out, ref, dtype, "out")
    assert_near(dqkv, ref_dqkv, dtype, "d qkv")


@pytest.mark.parametrize("dtype,T", [(torch.float32, 1), (torch.float32, 26), (torch.float32, 65),
                                     (torch.float64, 26), (torch.float16, 26), (torch.bfloat16, 65)])
def test_cross_attention_matches_reference(device, dtype, T):
    triton_on(device)
    heads, head_dim = 2, 64
    C = heads * head_dim
    q, kv = packed((2, 3, C), dtype, device), packed((2, T, 2 * C), dtype, device)
    out = cross_attention(q, kv, heads, backend="triton")
    grad_out = torch.randn(out.shape, dtype=torch.float64).to(dtype)
    dq, dkv = torch.autograd.grad(out, (q, kv), grad_out.to(device))
    ref_q, ref_kv = reference_copy(q), reference_copy(kv)
    ref = cross_attention_reference(ref_q, ref_kv, heads)
    ref_dq, ref_dkv = torch.autograd.grad(ref, (ref_q, ref_kv), grad_out.double())
    assert out.shape == (2, 3, C)
    assert_near(out, ref, dtype, "out")
    assert_near(dq, ref_dq, dtype, "d q")
    assert_near(dkv, ref_dkv, dtype, "d kv")


@pytest.mark.parametrize("dtype", ALL)
@pytest.mark.parametrize("T", [26, 65])  # one key block; several (dQ accumulated over blocks)
def test_recon_attention_fused_matches_reference(device, dtype, T):
    triton_on(device)
    check_recon(*recon_inputs(2, T, 2, 64, dtype, device), 2)


@pytest.mark.parametrize("heads,head_dim", [(3, 24), (1, 16), (6, 8)])
def test_head_dims_that_are_not_64(device, heads, head_dim):
    triton_on(device)
    check_recon(*recon_inputs(2, 9, heads, head_dim, torch.float32, device, queries=5), heads)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_513_tokens(device, dtype):
    """The longest finetuning sequence (512 patches + cls), B = H = 1 to keep the interpreter fast."""
    triton_on(device)
    check_recon(*recon_inputs(1, 513, 1, 64, dtype, device), 1)


def test_fused_equals_separate_calls(device):
    triton_on(device)
    qkv, q, kv = recon_inputs(2, 40, 2, 32, torch.float32, device)
    lengths = torch.tensor([40, 17], device=device)
    fused, fused_grads, grad_outs = run_recon(qkv, q, kv, 2, lengths)
    self_out = self_attention(qkv, 2, key_lengths=lengths, backend="triton")
    cross_out = cross_attention(q, kv, 2, key_lengths=lengths, backend="triton")
    grads = torch.autograd.grad((self_out, cross_out), (qkv, q, kv),
                                tuple(g.float().to(device) for g in grad_outs))
    for a, b in zip(fused + fused_grads, (self_out, cross_out) + grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_log_sum_exp_is_saved(device):
    triton_on(device)
    qkv, q, kv = (t.detach() for t in recon_inputs(2, 30, 2, 32, torch.float32, device))
    lengths = torch.tensor([30, 11], device=device)
    _, self_lse, _, cross_lse = torch.ops.recon_fast.triton_recon_attention(qkv, q, kv, 2, lengths)
    _, ref_self_lse = self_attention_reference(qkv.cpu(), 2, lengths.cpu(), return_lse=True)
    _, ref_cross_lse = cross_attention_reference(q.cpu(), kv.cpu(), 2, lengths.cpu(), return_lse=True)
    assert self_lse.dtype == torch.float32 and self_lse.shape == (2, 2, 30)
    assert_near(self_lse, ref_self_lse, torch.float32, "self lse")
    assert_near(cross_lse, ref_cross_lse, torch.float32, "cross lse")


# ---------------------------------------------------------------------------------------------
# The backward split over key blocks and query blocks
# ---------------------------------------------------------------------------------------------

H100_SMS = 132  # streaming multiprocessors of an H100 SXM (an H200 has as many)


def _kernels():
    pytest.importorskip("triton")
    return attention._load_kernels()


def planned_backward(B, T, heads, head_dim, dtype, queries=3):
    """The backward launches of a ReCon block (self + cross role) as the real op builds them, on
    meta tensors: planned, never run, so ReCon's full shapes cost nothing here."""
    kernels = _kernels()
    C = heads * head_dim
    qkv, q, kv = (torch.empty(B, n, w, dtype=dtype, device="meta")
                  for n, w in ((T, 3 * C), (queries, C), (T, 2 * C)))
    roles = [attention._self_role(kernels, qkv, heads), attention._cross_role(kernels, q, kv, heads)]
    outs = [torch.empty(B, n, C, dtype=dtype, device="meta") for n in (T, queries)]
    lses = [torch.empty(B, heads, n, dtype=torch.float32, device="meta") for n in (T, queries)]
    grads = [kernels.RoleGrads(*attention._grads_into(kernels, qkv, 3, heads)[1]),
             kernels.RoleGrads(attention._grads_into(kernels, q, 1, heads)[1][0],
                               *attention._grads_into(kernels, kv, 2, heads)[1])]
    launches, _ = kernels._backward_launches(roles, outs, lses, outs, grads, None, head_dim ** -0.5)
    return kernels, launches


@pytest.mark.parametrize("heads", [3, 6])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_backward_grid_fills_an_h100_at_finetuning_length(dtype, heads):
    """B32, 515 tokens (512 patches and ReCon's extra tokens): one program per (batch, head, role)
    was 2 x 32 x 3 = 192 programs for 132 SMs, a third of them tiny cross-attention ones. The
    split plan gives every key block and every query block of each role its own program."""
    kernels, launches = planned_backward(32, 515, heads, 64, dtype)
    plan = kernels.backward_plan(32, heads, [515, 3], 515, 64, dtype)
    assert [launch.kernel for launch in launches] == [kernels._attention_delta_kernel,
                                                      kernels._attention_bwd_kernel]
    assert launches[0].grid == plan.delta_grid == (32 * heads, sum(plan.query_blocks))
    assert launches[1].grid == plan.grid
    block = launches[1].kwargs["BLOCK_N"]
    assert plan.key_blocks == -(-515 // block) and plan.query_blocks[0] == -(-515 // launches[1].kwargs["BLOCK_M_A"])
    assert plan.grid == (32 * heads * (2 * plan.key_blocks + sum(plan.query_blocks)),)
    assert plan.programs >= 4 * H100_SMS, plan  # several programs per SM, not one


def test_backward_keeps_one_launch_when_the_keys_fit_one_block():
    """Pretraining (26 tokens, B128): already 2 x 768 programs, and no key block to split."""
    kernels, launches = planned_backward(128, 26, 6, 64, torch.bfloat16)
    assert [launch.kernel for launch in launches] == [kernels._attention_bwd_kernel]
    assert launches[0].grid == (128 * 6 * 2,) and not launches[0].kwargs["SPLIT"]


# (dtype, T): one key block, exactly full blocks, one key past a block, several blocks; the
# backward's key block is 32 for 4/8-byte types and 64 for halves.
SPLIT_CASES = [(torch.float32, 1), (torch.float32, 17), (torch.float32, 32), (torch.float32, 33),
               (torch.float32, 97), (torch.float64, 33), (torch.float16, 64), (torch.float16, 65),
               (torch.bfloat16, 129)]


@pytest.mark.parametrize("dtype,T", SPLIT_CASES)
def test_backward_across_block_boundaries(device, dtype, T):
    triton_on(device)
    kernels = _kernels()
    plan = kernels.backward_plan(2, 2, [T, 3], T, 16, dtype)
    assert plan.split == (T > kernels.BLOCK_CAPS[dtype.itemsize][2])
    lengths = torch.tensor([T, max(1, T // 3)], device=device)  # ragged: whole padded key blocks
    check_recon(*recon_inputs(2, T, 2, 16, dtype, device), 2, key_lengths=lengths)


def test_515_tokens_float16(device):
    """ReCon's longest finetuning sequence with its extra tokens: nine key blocks of 64, the last
    one holding 3 keys (B = H = 1 to keep the interpreter fast)."""
    triton_on(device)
    check_recon(*recon_inputs(1, 515, 1, 64, torch.float16, device), 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_split_and_unsplit_backward_agree(device, dtype, monkeypatch):
    """The split plan and one program per (batch, head, role) walking every key block (dQ
    accumulated in place) compute the same gradients; both match the reference."""
    triton_on(device)
    kernels = _kernels()
    inputs = recon_inputs(2, 70, 2, 16, dtype, device, layout="slice")
    lengths = torch.tensor([70, 40], device=device)
    assert kernels.backward_plan(2, 2, [70, 3], 70, 16, dtype).split
    _, split = check_recon(*inputs, 2, key_lengths=lengths)
    monkeypatch.setattr(kernels, "SPLIT_FROM_KEY_BLOCKS", 10 ** 9)
    assert not kernels.backward_plan(2, 2, [70, 3], 70, 16, dtype).split
    _, unsplit = check_recon(*inputs, 2, key_lengths=lengths)
    atol, rtol = {torch.float32: (1e-6, 1e-6), torch.bfloat16: (1e-2, 1e-2)}[dtype]
    for a, b in zip(split, unsplit):
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol)


def test_split_backward_is_deterministic_with_strided_output_gradients(device):
    """Every gradient row of the split backward has one writer (no atomics): two runs agree
    bit for bit. The output gradients are non-contiguous views."""
    triton_on(device)
    qkv, q, kv = recon_inputs(2, 70, 2, 16, torch.float32, device, layout="transposed")
    lengths = torch.tensor([70, 45], device=device)
    self_out, cross_out = recon_attention(qkv, q, kv, 2, key_lengths=lengths, backend="triton")
    g_self = torch.randn(self_out.shape[::-1], dtype=torch.float64).to(device).float().permute(2, 1, 0)
    g_cross = torch.randn(2, 3, 64, device=device)[..., ::2]
    assert not g_self.is_contiguous() and not g_cross.is_contiguous()
    first = torch.autograd.grad((self_out, cross_out), (qkv, q, kv), (g_self, g_cross), retain_graph=True)
    second = torch.autograd.grad((self_out, cross_out), (qkv, q, kv), (g_self, g_cross))
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    _, want = reference_recon(qkv, q, kv, 2, lengths, (g_self.cpu().double(), g_cross.cpu().double()))
    for got, ref, name in zip(first, want, ("d qkv", "d q_cross", "d kv_cross")):
        assert_near(got, ref, torch.float32, name)


# ---------------------------------------------------------------------------------------------
# Ragged batches, detached tokens, memory layouts
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("T", [26, 70])
def test_key_lengths_match_reference(device, dtype, T):
    triton_on(device)
    lengths = torch.tensor([T, 1, T // 2], device=device)
    check_recon(*recon_inputs(3, T, 2, 32, dtype, device), 2, key_lengths=lengths)


def test_key_lengths_equal_truncated_sequences(device):
    """A sample with length L attends exactly as if its sequence ended at L; its padded keys get
    exactly zero gradient."""
    triton_on(device)
    T, heads, head_dim = 37, 2, 32
    C = heads * head_dim
    qkv, q, kv = recon_inputs(3, T, heads, head_dim, torch.float32, device)
    lengths = [37, 5, 20]
    (self_out, cross_out), (dqkv, _, dkv), _ = run_recon(qkv, q, kv, heads,
                                                         torch.tensor(lengths, device=device))
    for b, L in enumerate(lengths):
        keys = qkv[b:b + 1].detach().cpu().double().reshape(1, T, 3, heads, head_dim)[:, :L]
        queries = qkv[b:b + 1].detach().cpu().double().reshape(1, T, 3, heads, head_dim)[:, :, 0]
        scores = torch.einsum("bqhd,bkhd->bhqk", queries, keys[:, :, 1]) / head_dim ** 0.5
        want = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), keys[:, :, 2]).reshape(T, C)
        assert_near(self_out[b], want, torch.float32, f"sample {b}")
        truncated = cross_attention_reference(q[b:b + 1].detach().cpu(), kv[b:b + 1, :L].detach().cpu(), heads)
        assert_near(cross_out[b], truncated[0], torch.float32, f"cross sample {b}")
        assert torch.count_nonzero(dqkv[b, L:, C:]) == 0  # keys and values of padded tokens
        assert torch.count_nonzero(dkv[b, L:]) == 0


@pytest.mark.parametrize("detach", [True, False])
def test_cross_attention_to_detached_tokens(device, detach):
    """ReCon pretraining: the global queries attend to kv(stopgrad(tokens)). The kv weights still
    get gradients (through dK/dV); the tokens get exactly none through this path."""
    triton_on(device)
    torch.manual_seed(0)
    B, T, heads, head_dim = 2, 26, 2, 32
    C = heads * head_dim
    q_proj = torch.nn.Linear(C, C, bias=False).to(device)
    kv_proj = torch.nn.Linear(C, 2 * C, bias=False).to(device)
    tokens = torch.randn(B, T, C, device=device, requires_grad=True)
    queries = torch.randn(B, 3, C, device=device, requires_grad=True)

    def loss(backend):
        source = tokens.detach() if detach else tokens
        out = cross_attention(q_proj(queries), kv_proj(source), heads, backend=backend)
        return out.square().sum()

    params = [tokens, queries, kv_proj.weight, q_proj.weight]
    got = torch.autograd.grad(loss("triton"), params, allow_unused=True)
    want = torch.autograd.grad(loss("eager"), params, allow_unused=True)
    if detach:
        assert got[0] is None or torch.count_nonzero(got[0]) == 0
        assert want[0] is None or torch.count_nonzero(want[0]) == 0
    else:
        assert torch.count_nonzero(got[0]) > 0
        assert_near(got[0], want[0], torch.float32, "d tokens")
    assert torch.count_nonzero(got[2]) > 0
    for g, w, name in zip(got[1:], want[1:], ("d queries", "d kv weight", "d q weight")):
        assert_near(g, w, torch.float32, name)


@pytest.mark.parametrize("layout", ["slice", "transposed", "strided_last"])
def test_strided_packed_inputs(device, layout):
    triton_on(device)
    qkv, q, kv = recon_inputs(2, 19, 2, 32, torch.float32, device, layout=layout)
    assert not qkv.is_contiguous()
    check_recon(qkv, q, kv, 2, key_lengths=torch.tensor([19, 7], device=device))


def test_batch_of_zero(device):
    triton_on(device)
    qkv, q, kv = recon_inputs(0, 5, 2, 16, torch.float32, device)
    self_out, cross_out = recon_attention(qkv, q, kv, 2, backend="triton")
    assert self_out.shape == (0, 5, 32) and cross_out.shape == (0, 3, 32)


# ---------------------------------------------------------------------------------------------
# Backends, autograd machinery, torch.compile
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_backends_agree(device, dtype):
    triton_on(device)
    inputs = recon_inputs(3, 29, 2, 32, dtype, device)
    lengths = torch.tensor([29, 3, 16], device=device)
    results = {b: run_recon(*inputs, 2, lengths, backend=b) for b in ("triton", "sdpa", "eager")}
    tol = TOL[dtype] if dtype == torch.float32 else (4e-2, 4e-2)  # eager rounds softmax to bf16
    for backend in ("sdpa", "eager"):
        for got, want in zip(results["triton"][0] + results["triton"][1],
                             results[backend][0] + results[backend][1]):
            scale = max(1.0, want.abs().max().item())
            torch.testing.assert_close(got.double(), want.double(), atol=tol[0] * scale, rtol=tol[1])


def test_gradcheck_float64(device):
    triton_on(device)
    qkv, q, kv = (t.detach().requires_grad_() for t in recon_inputs(2, 5, 2, 8, torch.float64, device, queries=2))
    lengths = torch.tensor([5, 3], device=device)

    def fused(a, b, c):
        return recon_attention(a, b, c, 2, key_lengths=lengths, backend="triton")

    def cross(b, c):
        return cross_attention(b, c, 2, backend="triton")

    assert torch.autograd.gradcheck(fused, (qkv, q, kv), fast_mode=True)
    assert torch.autograd.gradcheck(cross, (q, kv), fast_mode=True)
    assert torch.autograd.gradcheck(lambda a: self_attention(a, 2, backend="triton"), (qkv,), fast_mode=True)


def test_opcheck(device):
    triton_on(device)
    qkv, q, kv = (t.detach().requires_grad_() for t in recon_inputs(2, 6, 2, 16, torch.float32, device))
    lengths = torch.tensor([6, 2], device=device)
    torch.library.opcheck(torch.ops.recon_fast.triton_self_attention.default, (qkv, 2, lengths))
    torch.library.opcheck(torch.ops.recon_fast.triton_cross_attention.default, (q, kv, 2, None))
    torch.library.opcheck(torch.ops.recon_fast.triton_recon_attention.default, (qkv, q, kv, 2, lengths))


def test_torch_compile(device, interpreter_flag):
    triton_on(device)
    torch._dynamo.reset()
    qkv, q, kv = recon_inputs(2, 12, 2, 16, torch.float32, device)
    lengths = torch.tensor([12, 5], device=device)

    def block(qkv, q, kv):
        self_out, cross_out = recon_attention(qkv, q, kv, 2, key_lengths=lengths)  # "auto"
        return self_out.square().sum() + cross_out.square().sum()

    compiled = torch.compile(block, backend="aot_eager", fullgraph=True)
    got = torch.autograd.grad(compiled(qkv, q, kv), (qkv, q, kv))
    want = torch.autograd.grad(block(qkv, q, kv), (qkv, q, kv))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_auto_never_picks_triton_on_cpu_without_the_flag(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert attention.resolve_backend("auto", torch.zeros(1)) == "sdpa"


def test_auto_picks_triton_on_cpu_with_the_flag(interpreter_flag):
    triton_on(torch.device("cpu"))
    assert attention.resolve_backend("auto", torch.zeros(1)) == "triton"
    assert attention.resolve_backend("auto", torch.zeros(1, dtype=torch.float64)) == "sdpa"


@pytest.mark.parametrize("head_dim", [128, 256])
def test_auto_leaves_wide_heads_to_sdpa(interpreter_flag, head_dim):
    # The Triton kernels spill registers at these widths: "auto" gives them to SDPA, while an
    # explicit backend="triton" still runs them.
    triton_on(torch.device("cpu"))
    t = torch.zeros(1)
    assert attention.resolve_backend("auto", t, head_dim=64) == "triton"
    assert attention.resolve_backend("auto", t, head_dim=head_dim) == "sdpa"
    assert attention.resolve_backend("triton", t, head_dim=head_dim) == "triton"


def test_triton_launches_make_the_tensors_device_current():
    kernels = pytest.importorskip("triton") and attention._load_kernels()
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():  # a cuda:1 tensor without a GPU
        on_gpu1 = torch.empty(2, device="cuda:1")
    guard = kernels._device_of([7, torch.zeros(1), on_gpu1])
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1
    assert not isinstance(kernels._device_of([torch.zeros(1), 3]), torch.cuda.device)


@pytest.mark.cuda
def test_triton_attention_on_a_second_gpu():
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA GPUs (the tensors on cuda:1 while cuda:0 is current)")
    qkv, q, kv = recon_inputs(2, 26, 2, 32, torch.float32, torch.device("cuda:0"))
    want = recon_attention(qkv, q, kv, 2, backend="triton")
    with torch.cuda.device(0):
        got = recon_attention(*(t.detach().to("cuda:1") for t in (qkv, q, kv)), 2, backend="triton")
    for g, w in zip(got, want):
        assert g.device == torch.device("cuda:1")
        torch.testing.assert_close(g.cpu(), w.detach().cpu())


def test_triton_on_cpu_without_the_interpreter_is_refused(monkeypatch):
    kernels = pytest.importorskip("triton") and attention._load_kernels()
    monkeypatch.setattr(kernels, "INTERPRETED", False)
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        self_attention(torch.zeros(1, 4, 12), 2, backend="triton")


def test_head_dim_beyond_the_kernels_limit(device, interpreter_flag):
    triton_on(device)
    qkv = torch.zeros(1, 3, 3 * 2 * 260, device=device)
    with pytest.raises(ValueError, match="head_dim must be at most 256, got 260"):
        self_attention(qkv, 2, backend="triton")
    assert attention.resolve_backend("auto", qkv, head_dim=260) == "sdpa"
    assert self_attention(qkv, 2).shape == (1, 3, 520)  # "auto" falls back to SDPA


@pytest.mark.cuda
def test_auto_picks_triton_on_cuda():
    x = torch.zeros(1, device="cuda")
    expected = "triton" if torch.cuda.get_device_capability() >= (8, 0) else "sdpa"
    assert attention.resolve_backend("auto", x) == expected


# ---------------------------------------------------------------------------------------------
# Bad inputs
# ---------------------------------------------------------------------------------------------

def _zeros(*shape, **kw):
    return torch.zeros(*shape, **kw)


BAD_INPUTS = [
    ("qkv", lambda: self_attention(_zeros(2, 5, 100), 6)),
    ("num_heads", lambda: self_attention(_zeros(2, 5, 36), 0)),
    ("num_heads", lambda: self_attention(_zeros(2, 5, 36), 2.0)),
    (r"qkv has width 30, which is not 3 x num_heads \(4\)", lambda: self_attention(_zeros(2, 5, 30), 4)),
    ("qkv must have shape", lambda: self_attention(_zeros(5, 36), 2)),
    ("qkv must be float", lambda: self_attention(_zeros(2, 5, 36, dtype=torch.int64), 2)),
    ("qkv has no tokens", lambda: self_attention(_zeros(2, 0, 36), 2)),
    ("q has width 10", lambda: cross_attention(_zeros(2, 3, 10), _zeros(2, 5, 20), 4)),
    ("kv must have width 2C = 24", lambda: cross_attention(_zeros(2, 3, 12), _zeros(2, 5, 36), 2)),
    ("batch size", lambda: cross_attention(_zeros(2, 3, 12), _zeros(3, 5, 24), 2)),
    ("dtype", lambda: cross_attention(_zeros(2, 3, 12), _zeros(2, 5, 24, dtype=torch.float64), 2)),
    ("q is on cpu but kv is on meta", lambda: cross_attention(_zeros(2, 3, 12), _zeros(2, 5, 24, device="meta"), 2)),
    (r"qkv \(B, T, 3C\) and kv_cross", lambda: recon_attention(_zeros(2, 5, 36), _zeros(2, 3, 12), _zeros(2, 6, 24), 2)),
    (r"qkv \(B, T, 3C\) and kv_cross", lambda: recon_attention(_zeros(2, 5, 48), _zeros(2, 3, 12), _zeros(2, 5, 24), 2)),
    ("kv_cross has batch size", lambda: recon_attention(_zeros(2, 5, 36), _zeros(3, 3, 12), _zeros(3, 5, 24), 2)),
    ("key_lengths must have shape", lambda: self_attention(_zeros(2, 5, 36), 2, key_lengths=torch.tensor([5]))),
    ("key_lengths must hold integers", lambda: self_attention(_zeros(2, 5, 36), 2, key_lengths=torch.tensor([5.0, 5.0]))),
    (r"key_lengths must lie in \[1, 5\]", lambda: self_attention(_zeros(2, 5, 36), 2, key_lengths=torch.tensor([0, 5]))),
    (r"key_lengths must lie in \[1, 5\]", lambda: cross_attention(_zeros(2, 3, 12), _zeros(2, 5, 24), 2, key_lengths=[6, 5])),
    ("backend must be one of", lambda: self_attention(_zeros(2, 5, 36), 2, backend="flash")),
]


@pytest.mark.parametrize("fragment,call", BAD_INPUTS, ids=[f"{i}" for i in range(len(BAD_INPUTS))])
def test_bad_inputs_raise_value_error(fragment, call):
    with pytest.raises(ValueError, match=fragment):
        call()


# ---------------------------------------------------------------------------------------------
# The compiled kernels, built for GPUs without one (Triton's compiler and ptxas only)
# ---------------------------------------------------------------------------------------------

_COMPILE_CASES = [  # (dtype, batch, tokens, arch): pretraining, finetuning, fp32 and Ampere
    ("bfloat16", 128, 26, 90), ("float16", 32, 128, 90), ("bfloat16", 32, 515, 90),
    ("float32", 128, 26, 90), ("float32", 32, 515, 90), ("bfloat16", 128, 26, 80),
]


@pytest.mark.slow
def test_kernels_compile_for_gpus_without_spilling():
    """Runs the real launchers' arguments through triton.compile for sm_90/sm_80 in a fresh process
    (the compiler mode cannot be used in a process that imported triton interpreted)."""
    triton = pytest.importorskip("triton")
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    if not os.path.isfile(ptxas):
        pytest.skip("triton ships no ptxas here")
    root = os.path.dirname(os.path.dirname(os.path.abspath(attention.__file__)))
    script = (
        "import json, torch\nfrom triton_compile import compile_check\n"
        f"cases = {_COMPILE_CASES!r}\n"
        "print(json.dumps([compile_check(getattr(torch, d), b, t, arch=a) for d, b, t, a in cases]))\n")
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    tests = os.path.dirname(os.path.abspath(__file__))
    env["PYTHONPATH"] = os.pathsep.join([root, tests, env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          cwd=root, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    reports = json.loads(done.stdout.strip().splitlines()[-1])
    for case, report in zip(_COMPILE_CASES, reports):
        key_block = {"bfloat16": 64, "float16": 64, "float32": 32}[case[0]]
        split = ["_attention_delta_kernel"] if case[2] > key_block else []  # several key blocks
        assert [r["kernel"] for r in report] == ["_attention_fwd_kernel", *split, "_attention_bwd_kernel"]
        for r in report:
            assert r["shared"] <= 100 * 1024, (case, r)  # fits every sm_80+ GPU
            if r["stack"] is not None and case[3] == 90:
                assert r["stack"] == 0, (case, r)  # no register spills on Hopper
