"""Ahead-of-time compilation of the Triton attention kernels for a CUDA arch, without a GPU.

`compile_check` runs the real launchers' arguments through ``triton.compile`` and ptxas and reports
shared memory, registers and spill stack per kernel; tests/test_attention.py and bench/ use it to
check that the ReCon shapes fit sm_80/sm_90. Needs triton imported in compiler mode
(TRITON_INTERPRET unset), so callers run it in a fresh process.
"""

from __future__ import annotations

import os
from typing import List, Optional

import torch
import triton

from recon_fast.kernels import recon_attention as kernels

_TRITON_TYPES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32",
                 torch.float64: "fp64", torch.int64: "i64", torch.int32: "i32"}


def _specialised_source(launch):
    """The launch as triton.compile input, specialised on its arguments the way a JIT launch is
    (ints equal to 1 become constants; pointers and ints divisible by 16 are marked so)."""
    from triton.compiler import ASTSource

    signature, constants, attrs = {}, {}, {}
    for index, name in enumerate(launch.kernel.arg_names):
        value = launch.args[index] if index < len(launch.args) else launch.kwargs[name]
        if index >= len(launch.args) or (isinstance(value, int) and value == 1):
            signature[name], constants[name] = "constexpr", value
        elif isinstance(value, torch.Tensor):
            signature[name] = "*" + _TRITON_TYPES[value.dtype]
            if value.data_ptr() % 16 == 0:
                attrs[(index,)] = [["tt.divisibility", 16]]
        elif isinstance(value, float):
            signature[name] = "fp32"
        else:
            signature[name] = "i32"
            if value % 16 == 0:
                attrs[(index,)] = [["tt.divisibility", 16]]
    options = {key: launch.kwargs[key] for key in ("num_warps", "num_stages")}
    return ASTSource(launch.kernel, signature, constexprs=constants, attrs=attrs), options


def _register_usage(cubin: bytes) -> Optional[dict]:
    """Registers and spill stack of a cubin, from the cuobjdump shipped with triton (or None)."""
    import re
    import subprocess
    import tempfile

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.isfile(tool):
        return None
    with tempfile.NamedTemporaryFile(suffix=".cubin") as handle:
        handle.write(cubin)
        handle.flush()
        text = subprocess.run([tool, "-res-usage", handle.name], capture_output=True, text=True).stdout
    found = re.search(r"REG:(\d+) STACK:(\d+)", text)
    return None if found is None else {"registers": int(found.group(1)), "stack": int(found.group(2))}


def compile_check(dtype: torch.dtype, batch: int, tokens: int, queries: Optional[int] = 3,
                  heads: int = 6, head_dim: int = 64, arch: int = 90, ragged: bool = False) -> List[dict]:
    """Compile the forward and backward launches of a ReCon block's attention for a CUDA arch
    (80: Ampere, 90: Hopper) without a GPU: Triton's compiler and ptxas only.

    Shapes follow the packed projections: self-attention over `tokens` patch tokens plus, unless
    `queries` is None, cross-attention of `queries` global queries in the same launch. Returns per
    kernel launched, in order, {"kernel", "shared", "registers", "stack"} (registers/stack None
    without cuobjdump).
    Needs the compiler mode (TRITON_INTERPRET unset when triton was imported).
    """
    from triton.backends.compiler import GPUTarget

    if kernels.INTERPRETED:
        raise RuntimeError("compile_check needs triton imported without TRITON_INTERPRET=1")
    width = heads * head_dim
    packed = torch.zeros(batch, tokens, 3 * width, dtype=dtype).unflatten(2, (3, heads, head_dim))
    roles = [kernels.Role(*packed.unbind(2))]
    if queries is not None:
        q = torch.zeros(batch, queries, heads, head_dim, dtype=dtype)
        kv = torch.zeros(batch, tokens, 2 * width, dtype=dtype).unflatten(2, (2, heads, head_dim))
        roles.append(kernels.Role(q, *kv.unbind(2)))
    lengths = torch.full((batch,), tokens) if ragged else None
    forward, results = kernels._forward_launch(roles, lengths, head_dim ** -0.5)
    grads = [kernels.RoleGrads(torch.empty_like(r.q), torch.empty_like(r.k), torch.empty_like(r.v)) for r in roles]
    backward, _ = kernels._backward_launches(roles, [o for o, _ in results], [lse for _, lse in results],
                                             [torch.zeros_like(o) for o, _ in results], grads, lengths,
                                             head_dim ** -0.5)
    report = []
    for launch in [forward, *backward]:
        source, options = _specialised_source(launch)
        compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)
        usage = _register_usage(compiled.asm["cubin"]) or {"registers": None, "stack": None}
        report.append({"kernel": launch.kernel.__name__, "shared": compiled.metadata.shared, **usage})
    return report
