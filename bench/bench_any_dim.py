"""kNN and FPS over points of any dimension D, and the 3-D kernels against another build.

    python bench/bench_any_dim.py                       # any-D rows: recon_fast vs plain PyTorch
    python bench/bench_any_dim.py --baseline ../other   # 3-D rows: this tree vs another checkout

Times are CPU seconds of one thread (``time.process_time`` with torch set to one thread), so a
loaded machine slows every provider alike instead of whichever ran during a burst. Each provider
is checked for parity before it is timed; the median of ``--rounds`` calls is reported.

Any-D rows: ``ops.knn`` against ``torch.cdist`` + ``topk`` (what DGCNN-style code does) and
``ops.fps`` against the batched PyTorch loop, for D = 2, 3, 5, 8 and 64.

``--baseline PATH``: the 3-D workloads timed in child processes that import recon_fast from this
tree and from PATH (each with its own built extension), alternating A B A B ... for ``--rounds``
rounds, so both builds see the same machine conditions; a ratio above 1 means this tree is
faster (medians of the rounds, and the fastest round of each, which load disturbs least). It shows whether a change to the ops' entry points costs the 3-D kernels anything.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, ROOT)  # this tree's recon_fast (and its built extension)

DIMS = [2, 3, 5, 8, 64]
KNN_ANY_D = dict(B=8, N=1024, M=256, k=16)
FPS_ANY_D = dict(B=8, N=2048, m=256)
# 3-D workloads of the kernels' different paths: brute force / Morton scan and kd-tree (kNN),
# brute force and kd-tree (FPS).
THREE_D = {
    "knn B16 N1024 M64 k32": ("knn", dict(B=16, N=1024, M=64, k=32)),
    "knn B2 N20000 M2048 k16": ("knn", dict(B=2, N=20000, M=2048, k=16)),
    "fps B16 N1024 m64": ("fps", dict(B=16, N=1024, m=64)),
    "fps B1 N20000 m1024": ("fps", dict(B=1, N=20000, m=1024)),
}


def cpu_seconds(fn, rounds: int) -> float:
    fn()  # warm-up: first-call allocations
    times = []
    for _ in range(rounds):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def clouds(B, N, D, seed):
    import torch

    return torch.rand(B, N, D, generator=torch.Generator().manual_seed(seed))


def any_dim_rows(rounds: int) -> list[dict]:
    import torch

    from recon_fast import ops
    from reference import fps_reference, fps_torch_loop, knn_cdist_topk

    rows = []
    for D in DIMS:
        c = KNN_ANY_D
        q, p = clouds(c["B"], c["M"], D, 1), clouds(c["B"], c["N"], D, 2)
        got = ops.knn(q, p, c["k"])
        want, _ = knn_cdist_topk(q, p, c["k"])
        torch.testing.assert_close(got.dists, want, atol=1e-4, rtol=1e-3)
        ours = cpu_seconds(lambda: ops.knn(q, p, c["k"]), rounds)
        ref = cpu_seconds(lambda: knn_cdist_topk(q, p, c["k"]), rounds)
        rows.append({"op": "knn", "case": f"B{c['B']} N{c['N']} M{c['M']} k{c['k']} D{D}",
                     "ours_ms": ours * 1e3, "reference": "torch cdist+topk",
                     "reference_ms": ref * 1e3})
    for D in DIMS:
        c = FPS_ANY_D
        x = clouds(c["B"], c["N"], D, 3)
        assert torch.equal(ops.fps(x, c["m"]), fps_reference(x, c["m"]))
        ours = cpu_seconds(lambda: ops.fps(x, c["m"]), rounds)
        ref = cpu_seconds(lambda: fps_torch_loop(x, c["m"]), max(1, rounds // 3))
        rows.append({"op": "fps", "case": f"B{c['B']} N{c['N']} m{c['m']} D{D}",
                     "ours_ms": ours * 1e3, "reference": "torch FPS loop",
                     "reference_ms": ref * 1e3})
    return rows


def three_d_times(rounds: int) -> dict:
    """CPU seconds of each 3-D workload with the recon_fast this process imports."""
    from recon_fast import ops

    out = {}
    for name, (op, c) in THREE_D.items():
        if op == "knn":
            q, p = clouds(c["B"], c["M"], 3, 1), clouds(c["B"], c["N"], 3, 2)
            out[name] = cpu_seconds(lambda: ops.knn(q, p, c["k"]), rounds)
        else:
            x = clouds(c["B"], c["N"], 3, 3)
            out[name] = cpu_seconds(lambda: ops.fps(x, c["m"]), rounds)
    return out


def child_times(tree: str, rounds: int) -> dict:
    """three_d_times in a fresh process importing recon_fast from `tree`."""
    code = (f"import sys; sys.path.insert(0, {tree!r}); sys.path.insert(1, {HERE!r}); "
            "import torch; torch.set_num_threads(1); import json, bench_any_dim as b; "
            f"print(json.dumps(b.three_d_times({rounds})))")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=tree, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare_builds(baseline: str, rounds: int) -> list[dict]:
    trees = {"this tree": ROOT, "baseline": os.path.abspath(baseline)}
    samples = {label: {name: [] for name in THREE_D} for label in trees}
    for _ in range(rounds):
        for label, tree in trees.items():
            for name, t in child_times(tree, 3).items():
                samples[label][name].append(t)
    rows = []
    for name in THREE_D:
        ours = statistics.median(samples["this tree"][name])
        base = statistics.median(samples["baseline"][name])
        best_ours, best_base = min(samples["this tree"][name]), min(samples["baseline"][name])
        rows.append({"case": name, "this_tree_ms": ours * 1e3, "baseline_ms": base * 1e3,
                     "ratio": base / ours, "best_ratio": best_base / best_ours})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", help="another checkout with a built extension: compare "
                                           "the 3-D kernels of both builds")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    if args.baseline:
        rows = compare_builds(args.baseline, args.rounds)
        print("| 3-D workload | this tree (ms) | baseline (ms) | baseline / this | of the fastest rounds |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['case']} | {r['this_tree_ms']:.2f} | {r['baseline_ms']:.2f} | "
                  f"{r['ratio']:.3f} | {r['best_ratio']:.3f} |")
    else:
        rows = any_dim_rows(args.rounds)
        print("| op | workload | recon_fast (ms) | reference | reference (ms) | speed-up |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['op']} | {r['case']} | {r['ours_ms']:.2f} | {r['reference']} | "
                  f"{r['reference_ms']:.1f} | {r['reference_ms'] / r['ours_ms']:.1f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
