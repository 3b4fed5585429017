"""ReCon block attention, forward + backward: Triton kernels vs SDPA (with the head reshapes a
model needs, the reference) vs the eager maths of the official code.

Workloads (6 heads, head dim 64, packed projections as the Linear layers produce them):
  block: patch-token self-attention + 3 global queries' cross-attention to the same tokens, the
         Triton provider in one fused launch per direction; "triton-separate" times the two calls.
  self:  self-attention alone (the anchors in bench/targets.py).
  backward: the block's backward alone at the finetuning length (B32, 515 tokens: 512 patches and
         ReCon's extra tokens), where the Triton backward splits over key and query blocks;
         "triton-unsplit" times one program per (batch, head, role) walking every key block, the
         plan before the split, in the same run.
Pretraining has 26 visible tokens (B = 128), finetuning 128 or 515 (B = 32). Parity with a float64
reference is checked before any timing. GPU rows need CUDA; on the CPU only a tiny SDPA vs eager
case runs (the Triton kernels run there only under the interpreter, which is not worth timing).
"""

import pytest
import torch

import harness
from harness import OURS, REFERENCE, cached, record
from reference_attention import cross_attention_reference, self_attention_reference
from recon_fast import attention
from recon_fast.attention import cross_attention, recon_attention, self_attention
from targets import gpu_target

HEADS, HEAD_DIM, QUERIES = 6, 64, 3
# (name, B, T, dtype, target speed-up of Triton over SDPA + glue)
CPU = [("B8-T26", 8, 26, torch.float32, None)]
GPU = [("B128-T26", 128, 26, torch.float32, gpu_target("attention-self", "B128-T26")),
       ("B128-T26", 128, 26, torch.bfloat16, gpu_target("attention-self", "B128-T26")),
       ("B32-T128", 32, 128, torch.bfloat16, 1.0),  # never slower than SDPA
       ("B32-T515", 32, 515, torch.bfloat16, gpu_target("attention-self", "B32-T515")),
       ("B32-T515", 32, 515, torch.float32, 1.0)]
# Fused Triton vs the eager maths of the official code at the pretraining shape: at least 4x.
EAGER_TARGET = {"B128-T26": 4.0}


def _dtype_name(dtype):
    return str(dtype).replace("torch.", "")


PARAMS = ([pytest.param("cpu", c, id=f"cpu-{c[0]}-{_dtype_name(c[3])}") for c in CPU] +
          [pytest.param("cuda", c, id=f"cuda-{c[0]}-{_dtype_name(c[3])}", marks=pytest.mark.cuda)
           for c in GPU])


def _inputs(device, case):
    """Leaf tensors shaped like the projections' outputs, and fixed output gradients."""
    name, B, T, dtype, _ = case

    def make():
        C = HEADS * HEAD_DIM
        qkv = torch.randn(B, T, 3 * C, device=device, dtype=dtype, requires_grad=True)
        q = torch.randn(B, QUERIES, C, device=device, dtype=dtype, requires_grad=True)
        kv = torch.randn(B, T, 2 * C, device=device, dtype=dtype, requires_grad=True)
        grads = (torch.randn(B, T, C, device=device, dtype=dtype),
                 torch.randn(B, QUERIES, C, device=device, dtype=dtype))
        return qkv, q, kv, grads

    return cached(("attention-inputs", device, name, dtype), make)


# (name, B, T, heads, dtype) of the backward rows; GPU only.
BACKWARD = [("B32-T515", 32, 515, 6, torch.bfloat16), ("B32-T515", 32, 515, 6, torch.float32),
            ("B32-T515-H3", 32, 515, 3, torch.bfloat16)]


def _backward_inputs(case):
    name, B, T, heads, dtype = case

    def make():
        C = heads * HEAD_DIM
        qkv, q, kv = (torch.randn(B, n, w, device="cuda", dtype=dtype, requires_grad=True)
                      for n, w in ((T, 3 * C), (QUERIES, C), (T, 2 * C)))
        grads = (torch.randn(B, T, C, device="cuda", dtype=dtype),
                 torch.randn(B, QUERIES, C, device="cuda", dtype=dtype))
        return qkv, q, kv, grads

    return cached(("attention-backward-inputs", name, dtype), make)


@pytest.mark.cuda
@pytest.mark.parametrize("provider", ["triton", "triton-unsplit", "sdpa"])
@pytest.mark.parametrize("case", BACKWARD, ids=[f"{c[0]}-{_dtype_name(c[4])}" for c in BACKWARD])
def test_attention_backward(benchmark, monkeypatch, case, provider):
    """The block's backward alone (its forward runs once, outside the timing)."""
    name, _, _, heads, dtype = case
    if provider == "triton-unsplit":
        monkeypatch.setattr(attention._load_kernels(), "SPLIT_FROM_KEY_BLOCKS", 10 ** 9)
    qkv, q, kv, grads = _backward_inputs(case)
    outs = recon_attention(qkv, q, kv, heads, backend="sdpa" if provider == "sdpa" else "triton")

    def step():
        return torch.autograd.grad(outs, (qkv, q, kv), grads, retain_graph=True)

    def reference():
        inputs = [t.detach().double().requires_grad_() for t in (qkv, q, kv)]
        ref = (self_attention_reference(inputs[0], heads),
               cross_attention_reference(inputs[1], inputs[2], heads))
        return torch.autograd.grad(ref, inputs, [g.double() for g in grads])

    _check_parity(step(), cached(("attention-backward-ref", name, dtype), reference), dtype)
    record(benchmark, step, op="attention-backward", case=name, dtype=dtype, device=qkv.device,
           provider=_provider_name(provider), rounds=_rounds("cuda"),
           target=gpu_target("attention-backward", name))


def _block_step(provider, qkv, q, kv, grads):
    """One forward + backward of the block's two attentions with `provider`."""
    if provider == "triton":
        def attend():
            return recon_attention(qkv, q, kv, HEADS, backend="triton")
    else:
        backend = "triton" if provider == "triton-separate" else provider

        def attend():
            return (self_attention(qkv, HEADS, backend=backend),
                    cross_attention(q, kv, HEADS, backend=backend))

    def step():
        outs = attend()
        return outs, torch.autograd.grad(outs, (qkv, q, kv), grads)

    return step


def _self_step(provider, qkv, grads):
    def step():
        out = self_attention(qkv, HEADS, backend=provider)
        return out, torch.autograd.grad(out, qkv, grads[0])

    return step


def _reference(qkv, q, kv, grads):
    """Float64 outputs and gradients of the block (self first), on the inputs' device."""
    inputs = [t.detach().double().requires_grad_() for t in (qkv, q, kv)]
    outs = (self_attention_reference(inputs[0], HEADS), cross_attention_reference(inputs[1], inputs[2], HEADS))
    return outs, torch.autograd.grad(outs, inputs, [g.double() for g in grads])


def _check_parity(got, want, dtype):
    atol, rtol = {torch.float32: (1e-4, 1e-3), torch.bfloat16: (4e-2, 4e-2)}[dtype]
    for g, w in zip(got, want):
        scale = max(1.0, w.abs().max().item())
        torch.testing.assert_close(g.double(), w, atol=atol * scale, rtol=rtol)


def _rounds(device):
    return 30 if device == "cuda" else 20


def _provider_name(provider):
    return {"triton": OURS, "sdpa": REFERENCE}.get(provider, provider)


def _skip_unavailable(device, provider):
    if device == "cpu" and provider.startswith("triton"):
        pytest.skip("the Triton kernels run on the CPU only under the interpreter (not timed)")


@pytest.mark.parametrize("provider", ["triton", "triton-separate", "sdpa", "eager"])
@pytest.mark.parametrize("device,case", PARAMS)
def test_attention_block(benchmark, device, case, provider):
    _skip_unavailable(device, provider)
    qkv, q, kv, grads = _inputs(device, case)
    step = _block_step(provider, qkv, q, kv, grads)
    outs, input_grads = step()
    want_outs, want_grads = cached(("attention-ref", device, case[0], case[3]),
                                   lambda: _reference(qkv, q, kv, grads))
    _check_parity(outs + input_grads, want_outs + want_grads, case[3])
    record(benchmark, step, op="attention-block", case=case[0], dtype=case[3], device=qkv.device,
           provider=_provider_name(provider), rounds=_rounds(device), target=case[4])


@pytest.mark.parametrize("provider", ["triton", "sdpa", "eager"])
@pytest.mark.parametrize("device,case", PARAMS)
def test_attention_self(benchmark, device, case, provider):
    _skip_unavailable(device, provider)
    qkv, q, kv, grads = _inputs(device, case)
    step = _self_step(provider, qkv, grads)
    out, dqkv = step()
    want_outs, _ = cached(("attention-ref", device, case[0], case[3]), lambda: _reference(qkv, q, kv, grads))
    inputs = qkv.detach().double().requires_grad_()
    want_dqkv = torch.autograd.grad(self_attention_reference(inputs, HEADS), inputs, grads[0].double())
    _check_parity((out,) + dqkv, (want_outs[0],) + want_dqkv, case[3])
    record(benchmark, step, op="attention-self", case=case[0], dtype=case[3], device=qkv.device,
           provider=_provider_name(provider), rounds=_rounds(device), target=case[4])


@pytest.mark.cuda
def test_attention_targets_met():
    """Runs after the timings above: Triton >= target x SDPA + glue (>= 1x everywhere, never
    slower), and >= 4x eager for the fused block at the pretraining shape."""
    rows = {}
    for r in harness.ROWS:
        if r.op.startswith("attention-") and r.device == "cuda":
            rows.setdefault((r.op, r.case, r.dtype), {})[r.provider] = r.median_ms
    complete = {k: v for k, v in rows.items() if OURS in v and REFERENCE in v}
    if not complete:
        pytest.skip("no attention timings recorded in this session (run the whole file)")
    misses = []
    for (op, case, dtype), ms in sorted(complete.items()):
        target = next((c[4] for c in GPU if c[0] == case and _dtype_name(c[3]) == dtype), 1.0)
        speedup = ms[REFERENCE] / ms[OURS]
        if speedup < target:
            misses.append(f"{op} {case} {dtype}: {speedup:.2f}x SDPA+glue < {target}x")
        if op == "attention-block" and case in EAGER_TARGET and "eager" in ms:
            vs_eager = ms["eager"] / ms[OURS]
            if vs_eager < EAGER_TARGET[case]:
                misses.append(f"{op} {case} {dtype}: {vs_eager:.2f}x eager < {EAGER_TARGET[case]}x")
    assert not misses, "\n".join(misses)
