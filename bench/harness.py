"""The one benchmark harness: time providers of the same workload, pair them, report speed-ups.

Each benchmark test times one provider (recon_fast, the plain-PyTorch reference, or a peer library
when installed) of one workload with pytest-benchmark, after checking parity. The rows are paired
at the end of the session into a table (op, shape, dtype, device, ours, reference, speed-up,
target) that is printed and written as JSON and Markdown under bench/results/.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import subprocess
import sys
from typing import Callable

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
OURS = "recon_fast"
REFERENCE = "reference"


@dataclasses.dataclass
class Row:
    op: str
    case: str
    dtype: str
    device: str
    provider: str
    median_ms: float
    rounds: int
    target: float | None = None  # minimum speed-up of recon_fast over the reference


ROWS: list[Row] = []


def synchronized(fn: Callable[[], object], device: torch.device) -> Callable[[], object]:
    if device.type != "cuda":
        return fn

    def run():
        out = fn()
        torch.cuda.synchronize(device)
        return out

    return run


def record(benchmark, fn: Callable[[], object], *, op: str, case: str, dtype: torch.dtype,
           device: torch.device, provider: str, rounds: int, target: float | None = None) -> None:
    """Time `fn` (one warm-up, then `rounds` calls) and keep the median for the summary."""
    timed = synchronized(fn, device)
    benchmark.group = f"{op} {case} {str(dtype).replace('torch.', '')} {device.type}"
    benchmark.pedantic(timed, rounds=rounds, iterations=1, warmup_rounds=1)
    median_ms = benchmark.stats.stats.median * 1e3
    row = Row(op, case, str(dtype).replace("torch.", ""), device.type, provider, median_ms, rounds,
              target)
    ROWS.append(row)
    _append_to_row_log(row)


def _append_to_row_log(row: Row) -> None:
    """With RECON_FAST_BENCH_ROWS set, each row is appended to that JSON-lines file as soon as it
    is measured, so that a run stopped part-way keeps every number taken before the stop."""
    path = os.environ.get("RECON_FAST_BENCH_ROWS")
    if not path:
        return
    with open(path, "a") as f:
        f.write(json.dumps(dataclasses.asdict(row)) + "\n")
        f.flush()


def _environment() -> dict:
    env = {
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        pass
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        env["commit"] = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"],
                                       capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return env


def summary_rows() -> list[dict]:
    """One row per workload with recon_fast and reference timings and every peer's."""
    keyed: dict[tuple, dict] = {}
    for r in ROWS:
        key = (r.op, r.case, r.dtype, r.device)
        entry = keyed.setdefault(key, {"op": r.op, "case": r.case, "dtype": r.dtype,
                                       "device": r.device, "providers": {}, "target": None})
        entry["providers"][r.provider] = r.median_ms
        if r.target is not None:
            entry["target"] = r.target
    out = []
    for entry in keyed.values():
        ours, ref = entry["providers"].get(OURS), entry["providers"].get(REFERENCE)
        entry["speedup"] = (ref / ours) if ours and ref else None
        entry["met"] = (entry["speedup"] >= entry["target"]) if entry["speedup"] and entry["target"] else None
        out.append(entry)
    return out


def _fmt(v, digits=3):
    return "-" if v is None else f"{v:.{digits}g}"


def markdown_table(rows: list[dict]) -> str:
    lines = ["| op | workload | dtype | device | recon_fast ms | reference ms | speed-up | target | others ms |",
             "|---|---|---|---|---|---|---|---|---|"]
    for e in rows:
        others = ", ".join(f"{k} {_fmt(v)}" for k, v in e["providers"].items() if k not in (OURS, REFERENCE))
        target = f">= {e['target']:g}x" if e["target"] else "-"
        speed = f"{e['speedup']:.1f}x" if e["speedup"] else "-"
        if e["met"] is not None:
            speed += " (met)" if e["met"] else " (MISSED)"
        lines.append(f"| {e['op']} | {e['case']} | {e['dtype']} | {e['device']} | "
                     f"{_fmt(e['providers'].get(OURS))} | {_fmt(e['providers'].get(REFERENCE))} | "
                     f"{speed} | {target} | {others or '-'} |")
    return "\n".join(lines)


def write_report(terminal_write: Callable[[str], None]) -> None:
    if not ROWS:
        return
    rows = summary_rows()
    env = _environment()
    table = markdown_table(rows)
    header = ", ".join(f"{k} {v}" for k, v in env.items())
    terminal_write(f"\nrecon_fast benchmark summary ({header})\n{table}\n")
    os.makedirs(RESULTS_DIR, exist_ok=True)
    stem = os.path.join(RESULTS_DIR, f"{env['date']}_{'cuda' if 'gpu' in env else 'cpu'}")
    with open(stem + ".json", "w") as f:
        json.dump({"environment": env, "rows": rows, "raw": [dataclasses.asdict(r) for r in ROWS]},
                  f, indent=2)
    with open(stem + ".md", "w") as f:
        f.write(f"Measured {header}\n\n{table}\n")
    terminal_write(f"written {stem}.json and {stem}.md\n")


_CACHE: dict = {}


def cached(key, compute: Callable[[], object]):
    """Compute once per session (reference outputs used by several parity checks)."""
    if key not in _CACHE:
        _CACHE[key] = compute()
    return _CACHE[key]


def optional_import(name: str):
    """A peer library if it is installed, else None (its benchmark rows are skipped)."""
    try:
        return __import__(name, fromlist=["_"])
    except Exception:  # noqa: BLE001 - broken peer builds raise all sorts of errors
        return None


def cases(cpu: list, cuda: list) -> list:
    """pytest params: CPU workloads, then GPU workloads marked `cuda`."""
    import pytest

    return ([pytest.param("cpu", c, id=f"cpu-{c[0]}") for c in cpu] +
            [pytest.param("cuda", c, id=f"cuda-{c[0]}", marks=pytest.mark.cuda) for c in cuda])
