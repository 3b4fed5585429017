"""The GPU speed targets (one H100/H200), as ratios to a reference timed in the same run.

One home for the numbers: the benchmark files take their GPU targets from here and the GPU
check's summary marks each one met, missed or not measured. The anchors are medians measured on an
H200 (torch 2.11, CUDA 13) with the reference libraries built for sm_90.
"""

from __future__ import annotations

from typing import NamedTuple


class Target(NamedTuple):
    op: str          # the op name the benchmark rows use
    case: str        # the workload name the benchmark rows use
    ratio: float     # minimum speed-up of recon_fast over the row's reference
    reference: str   # what the reference provider is
    anchor: str      # what was measured elsewhere, for the reader


GPU_TARGETS = [
    Target("fps", "B128-N1024-m64", 72, "torch loop", "pointnet2_ops 0.087-0.092 ms, loop 4.4-4.8 ms"),
    Target("fps", "B32-N2048-m128", 88, "torch loop", "pointnet2_ops 0.149 ms, loop 8.70 ms"),
    Target("fps", "B32-N8192-m512", 53, "torch loop", "pointnet2_ops 0.963 ms, loop 33.7 ms"),
    Target("fps", "B1-N100k-m4096", 11, "torch loop", "pointnet2_ops 124 ms, loop 278 ms"),
    Target("knn", "B128-N1024-M64-k32", 3.8, "matmul+topk", "matmul+topk 0.39 ms, pytorch3d 0.305"),
    Target("knn", "B32-N2048-M128-k32", 3, "matmul+topk", "matmul+topk 0.315 ms, pytorch3d 0.486"),
    Target("knn", "B32-N8192-M512-k32", 6, "matmul+topk", "matmul+topk 2.81-3.03 ms, pytorch3d 1.39"),
    Target("knn", "B4-N50k-M4096-k16", 7.5, "matmul+topk", "matmul+topk 15.5 ms, pytorch3d 6.27"),
    Target("chamfer_l2 fwd+bwd", "4864x32x32", 10, "cdist+min",
           "cdist+min 1.33 ms, chamfer extension 4.85 ms; floor ~70-130x"),
    Target("chamfer_l2 fwd+bwd", "32x2048x2048", 16, "cdist+min", "extension 0.60 ms, cdist 4.71 ms"),
    Target("chamfer_l2 fwd+bwd", "8x8192x8192", 25, "cdist+min", "extension 1.45 ms, cdist 17.9 ms"),
    Target("attention-self", "B128-T26", 1.5, "SDPA+glue", "fp32 SDPA+glue 1.05 ms, bf16 1.40 ms"),
    Target("attention-self", "B32-T515", 1.0, "SDPA+glue", "bf16 SDPA+glue 1.27 ms: never slower"),
    Target("attention-backward", "B32-T515", 1.0, "SDPA", "the block's backward alone, 6 heads: "
           "never slower (no anchor measured yet)"),
    Target("attention-backward", "B32-T515-H3", 1.0, "SDPA", "as above with 3 heads"),
    Target("pretrain step", "base-B128", 10, "fp32 eager, online teachers",
           "reference code 219.6 ms (583 samples/s)"),
    Target("finetune step", "base-B32-N2048", 5, "fp32 eager", "fp32 56.7 ms, bf16 56.5 ms"),
]


def gpu_target(op: str, case: str) -> float:
    """The GPU target ratio of a benchmark row (KeyError names the row when none is set)."""
    for target in GPU_TARGETS:
        if (target.op, target.case) == (op, case):
            return target.ratio
    raise KeyError(f"no GPU target for {op} {case}")
