"""The end-of-run summary: what ran, on which data, how long and how fast, the final metrics and
where the checkpoint is. Printed and written as <out>/results.json by every command."""

from __future__ import annotations

import json
import os
import platform
import time
from typing import Any, Optional

RESULTS = "results.json"
# Summary keys that are metrics (fractions in [0, 1] unless named otherwise).
METRIC_KEYS = ("best", "last_metric", "vote", "svm_accuracy", "zero_shot_accuracy", "accuracy",
               "vote_accuracy", "fewshot_mean_percent", "fewshot_std_percent")


def _data_of(config) -> dict[str, str]:
    """split -> "NAME/subset" for every dataset section of the config."""
    out = {}
    for split, entry in (config.get("dataset") or {}).items():
        base = entry.get("_base_") or {}
        others = entry.get("others") or {}
        out[split] = f"{base.get('NAME', '?')}/{others.get('subset', '?')}"
    return out


def _checkpoint_in(out_dir: str) -> Optional[str]:
    for name in ("ckpt-best.pth", "ckpt-last.pth"):
        path = os.path.join(out_dir, name)
        if os.path.isfile(path):
            return path
    return None


def build_results(command: str, config_name: str, config, out_dir: str, summary: dict[str, Any],
                  *, started: float, samples: Optional[int] = None,
                  checkpoint: Optional[str] = None) -> dict[str, Any]:
    import torch

    import recon_fast

    wall = time.perf_counter() - started
    metrics = {k: summary[k] for k in METRIC_KEYS if summary.get(k) is not None}
    results = {
        "command": command, "config": config_name, "out_dir": out_dir,
        "data": _data_of(config), "wall_s": round(wall, 2),
        "metrics": metrics,
        "checkpoint": checkpoint if checkpoint is not None else _checkpoint_in(out_dir),
        "recon_fast": recon_fast.__version__, "torch": torch.__version__,
        "python": platform.python_version(),
    }
    for key in ("epoch", "global_step", "interrupted", "recompute_bn", "folds", "seed"):
        if key in summary:
            results[key] = summary[key]
    if samples is not None:
        results["samples"] = samples
        results["samples_per_s"] = round(samples / max(wall, 1e-9), 2)
    return results


def format_results(results: dict[str, Any]) -> list[str]:
    """A few human lines (the JSON file holds everything)."""
    head = f"[summary] {results['command']} --config {results['config']}: "
    if "global_step" in results:
        head += f"{results.get('epoch', 0) + 1} epochs, {results['global_step']} steps, "
    head += f"{results['wall_s']:.0f} s"
    if "samples_per_s" in results:
        head += f", {results['samples']} samples ({results['samples_per_s']:.1f} samples/s)"
    data = ", ".join(f"{split} {name}" for split, name in results["data"].items())
    metrics = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in results["metrics"].items()) or "none"
    lines = [head, f"[summary] data: {data}", f"[summary] metrics: {metrics}"]
    where = os.path.join(results["out_dir"], RESULTS)
    lines.append(f"[summary] checkpoint: {results['checkpoint'] or 'none'}; results: {where}")
    return lines


def write_results(results: dict[str, Any]) -> str:
    """<out_dir>/results.json (written whole, then renamed: never half a file)."""
    os.makedirs(results["out_dir"], exist_ok=True)
    path = os.path.join(results["out_dir"], RESULTS)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)
    return path


def report_run(command: str, config_name: str, config, out_dir: str, summary: dict[str, Any], *,
               started: float, samples: Optional[int] = None,
               checkpoint: Optional[str] = None) -> dict[str, Any]:
    """Build, print and write the end-of-run summary; returns it."""
    results = build_results(command, config_name, config, out_dir, summary, started=started,
                            samples=samples, checkpoint=checkpoint)
    write_results(results)
    for line in format_results(results):
        print(line, flush=True)
    return results
