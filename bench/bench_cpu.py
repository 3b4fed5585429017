"""CPU point ops against the best CPU peers, in one process, on every SIMD path this CPU has.

    python bench/bench_cpu.py                      # every workload, every supported SIMD path
    python bench/bench_cpu.py --busy 2             # the same with two CPU-bound processes beside it
    python bench/bench_cpu.py --only fps --capability avx2 --rounds 9

Peers are optional (pip install fpsample pykdtree point-cloud-utils scipy); a missing one is
skipped. Providers are timed round-robin (one call each per round), so a burst of load on the
machine hits all of them alike; the median of the rounds is reported. The ratio is the best
peer's median over ours: above 1, recon_fast is faster. The table also shows the threading check:
FPS and kNN with all threads against one thread, under the same conditions.

Targets (ratio to the best peer, 2 threads, an AVX2 machine): FPS >= 5x on batches of small
clouds and >= 1.5x on one 100k cloud; kNN >= 3x on ReCon's grouping shapes and >= 1.5x at N50k;
Chamfer >= 3x at 4864 pairs of 32x32 and >= 1.5x at 32 pairs of 2048x2048.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

import recon_fast
from recon_fast import ops


@dataclass
class Workload:
    op: str
    name: str
    target: float
    make: Callable[[], tuple]
    ours: Callable[..., object]
    peers: dict[str, Callable[..., object]] = field(default_factory=dict)


def _optional(name):
    try:
        return __import__(name, fromlist=["_"])
    except Exception:  # noqa: BLE001 - a broken peer build raises anything
        return None


fpsample = _optional("fpsample")
pykdtree = _optional("pykdtree.kdtree")
ckdtree = _optional("scipy.spatial")
pcu = _optional("point_cloud_utils")


def _clouds(B, N, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, N, 3, generator=g)


# ---- FPS ---------------------------------------------------------------------------------------

def fps_workload(B, N, m, target):
    peers = {}
    if fpsample is not None:
        peers["fpsample vanilla"] = lambda x, np_x: [fpsample.fps_sampling(c, m, start_idx=0)
                                                     for c in np_x]
        peers["fpsample bucket h7"] = lambda x, np_x: [
            fpsample.bucket_fps_kdline_sampling(c, m, h=7, start_idx=0) for c in np_x]
    return Workload("fps", f"B{B} N{N} m{m}", target,
                    make=lambda: (_clouds(B, N), ),
                    ours=lambda x, np_x: ops.fps(x, m),
                    peers=peers)


# ---- kNN ---------------------------------------------------------------------------------------

def knn_workload(B, N, M, k, target):
    peers = {}
    if ckdtree is not None:
        peers["scipy cKDTree"] = lambda q, p, np_q, np_p: [
            ckdtree.cKDTree(pp).query(qq, k=k, workers=torch.get_num_threads())
            for qq, pp in zip(np_q, np_p)]
    if pykdtree is not None:
        peers["pykdtree"] = lambda q, p, np_q, np_p: [pykdtree.KDTree(pp).query(qq, k=k)
                                                      for qq, pp in zip(np_q, np_p)]
    return Workload("knn", f"B{B} N{N} M{M} k{k}", target,
                    make=lambda: (_clouds(B, M, 1), _clouds(B, N, 2)),
                    ours=lambda q, p, np_q, np_p: ops.knn(q, p, k=k),
                    peers=peers)


# ---- Chamfer -----------------------------------------------------------------------------------

def _cdist_chamfer(x, y):
    d = torch.cdist(x, y).square()
    return d.min(2), d.min(1)


def chamfer_workload(B, N, target):
    peers = {"torch cdist+min": lambda x, y, np_x, np_y: _cdist_chamfer(x, y)}
    if pcu is not None:
        peers["point-cloud-utils"] = lambda x, y, np_x, np_y: [
            pcu.chamfer_distance(a, b) for a, b in zip(np_x, np_y)]
    return Workload("chamfer", f"{B} pairs {N}x{N}", target,
                    make=lambda: (_clouds(B, N, 3), _clouds(B, N, 4)),
                    ours=lambda x, y, np_x, np_y: torch.ops.recon_fast.chamfer(
                        x, y, torch.full((B,), N), torch.full((B,), N), 2),
                    peers=peers)


WORKLOADS = [
    fps_workload(128, 1024, 64, 5.0),
    fps_workload(32, 2048, 128, 5.0),
    fps_workload(1, 100_000, 4096, 1.5),
    knn_workload(128, 1024, 64, 32, 3.0),
    knn_workload(32, 2048, 128, 32, 3.0),
    knn_workload(4, 50_000, 4096, 16, 1.5),
    chamfer_workload(4864, 32, 3.0),
    chamfer_workload(32, 2048, 1.5),
]


def _time(fn, args) -> float:
    start = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - start) * 1e3


def _burn(stop):
    x = 0
    while not stop.is_set():
        x = (x * 1103515245 + 12345) % 2**31


def measure(workload: Workload, capabilities: list[str], rounds: int) -> dict:
    tensors = workload.make()
    arrays = tuple(t.numpy().astype(np.float64 if t.dtype == torch.float64 else np.float32)
                   for t in tensors)
    args = tensors + arrays
    providers: dict[str, Callable[[], float]] = {}
    for cap in capabilities:
        def ours(cap=cap):
            recon_fast.set_cpu_capability(cap)
            return _time(workload.ours, args)
        providers[f"recon_fast {cap}"] = ours
    for name, fn in workload.peers.items():
        providers[name] = lambda fn=fn: _time(fn, args)
    for run in providers.values():  # warm-up: first-call allocations, lazy library set-up
        run()
    times = {name: [] for name in providers}
    for _ in range(rounds):
        for name, run in providers.items():
            times[name].append(run())
    recon_fast.set_cpu_capability("auto")
    medians = {name: statistics.median(t) for name, t in times.items()}
    peer_medians = {n: v for n, v in medians.items() if not n.startswith("recon_fast")}
    best_peer = min(peer_medians, key=peer_medians.get) if peer_medians else None
    row = {"op": workload.op, "workload": workload.name, "target": workload.target,
           "median_ms": medians, "best_peer": best_peer, "ratio": {}}
    for cap in capabilities:
        ours_ms = medians[f"recon_fast {cap}"]
        if best_peer is not None:
            row["ratio"][cap] = peer_medians[best_peer] / ours_ms
    return row


def thread_check(rounds: int) -> list[dict]:
    """FPS and kNN with all threads vs one thread: dynamic work sharing must make more threads
    never slower, also next to other CPU-bound processes."""
    x = _clouds(128, 1024)
    calls = {"fps B128 N1024 m64": lambda: ops.fps(x, 64),
             "knn B128 N1024 M64 k32": lambda: ops.knn(x[:, :64], x, k=32)}
    threads = torch.get_num_threads()
    out = []
    for name, fn in calls.items():
        per = {}
        for n in (threads, 1):
            torch.set_num_threads(n)
            fn()
            per[n] = statistics.median(_time(fn, ()) for _ in range(rounds))
        torch.set_num_threads(threads)
        out.append({"call": name, "threads": threads, "ms_all_threads": per[threads],
                    "ms_one_thread": per[1]})
    return out


def environment(busy: int) -> dict:
    info = recon_fast.build_info()
    return {"date": datetime.date.today().isoformat(), "cpu": _cpu_name(),
            "simd_supported": info["cpu_capabilities"], "threads": torch.get_num_threads(),
            "busy_processes": busy, "torch": torch.__version__,
            "peers": {"fpsample": getattr(fpsample, "__version__", None) if fpsample else None,
                      "pykdtree": bool(pykdtree), "scipy": bool(ckdtree),
                      "point-cloud-utils": getattr(pcu, "__version__", None) if pcu else None}}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def markdown(rows: list[dict], threads: list[dict], env: dict, capabilities: list[str]) -> str:
    head = ["op", "workload", "best peer", "peer ms"] + [f"ours {c} ms" for c in capabilities] + \
           [f"ratio {c}" for c in capabilities] + ["target"]
    lines = [f"CPU: {env['cpu']}, SIMD paths {', '.join(env['simd_supported'])}, "
             f"{env['threads']} threads, {env['busy_processes']} busy processes beside, "
             f"{env['date']}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        peer = r["best_peer"]
        cells = [r["op"], r["workload"], peer or "-",
                 f"{r['median_ms'][peer]:.1f}" if peer else "-"]
        cells += [f"{r['median_ms'][f'recon_fast {c}']:.1f}" for c in capabilities]
        for c in capabilities:
            ratio = r["ratio"].get(c)
            cells.append("-" if ratio is None else
                         f"{ratio:.2f}x {'met' if ratio >= r['target'] else 'MISSED'}")
        cells.append(f">= {r['target']:g}x")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| call | ms, all threads | ms, 1 thread |", "|---|---|---|"]
    for t in threads:
        lines.append(f"| {t['call']} | {t['ms_all_threads']:.1f} ({t['threads']}) | "
                     f"{t['ms_one_thread']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["fps", "knn", "chamfer"], help="one op's workloads")
    parser.add_argument("--capability", action="append",
                        help="SIMD path(s) to time (default: every supported one)")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per provider")
    parser.add_argument("--busy", type=int, default=0,
                        help="CPU-bound processes to run beside the benchmark")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"),
                        help="folder for the JSON and Markdown results")
    args = parser.parse_args(argv)
    ops.set_checks(False)
    capabilities = args.capability or recon_fast.build_info()["cpu_capabilities"]
    stop = multiprocessing.Event()
    burners = [multiprocessing.Process(target=_burn, args=(stop,), daemon=True)
               for _ in range(args.busy)]
    for p in burners:
        p.start()
    try:
        rows = []
        for w in WORKLOADS:
            if args.only and w.op != args.only:
                continue
            rows.append(measure(w, capabilities, args.rounds))
            print(f"{w.op} {w.name}: " + ", ".join(f"{k} {v:.1f} ms"
                                                   for k, v in rows[-1]["median_ms"].items()),
                  flush=True)
        threads = thread_check(args.rounds)
    finally:
        stop.set()
        for p in burners:
            p.join()
    env = environment(args.busy)
    table = markdown(rows, threads, env, capabilities)
    print("\n" + table)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"{env['date']}_cpu_peers_busy{args.busy}")
    with open(stem + ".json", "w") as f:
        json.dump({"environment": env, "rows": rows, "threads": threads}, f, indent=2)
    with open(stem + ".md", "w") as f:
        f.write(table + "\n")
    print(f"\nwritten {stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
