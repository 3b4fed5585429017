"""The end-of-run summary: what ran, on which data, how long and how fast, the final metrics and
where the checkpoint is. Printed and written as <out>/results.json by every command.

Every file also records what a reader needs to trust or reproduce a number: the evaluation
protocol (official or strict, recon_fast.eval.protocol; pretraining's own check is the
reference's, so "official"), the sha256 of the checkpoint measured and of the one the run
started from, the seeds, the size of each split (train / val / test) and the package version."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from typing import Any, Optional

RESULTS = "results.json"
# Summary keys that are metrics (fractions in [0, 1] unless named otherwise).
METRIC_KEYS = ("best", "last_metric", "val_accuracy", "test_accuracy", "vote", "svm_accuracy",
               "svm_accuracy_untrained", "zero_shot_accuracy", "accuracy", "vote_accuracy",
               "fewshot_mean_percent", "fewshot_std_percent")
# Summary keys copied as they are (when present).
RECORD_KEYS = ("epoch", "global_step", "interrupted", "recompute_bn", "folds", "seed", "seeds",
               "split_sizes", "selected_epoch", "epoch_metrics", "vote_rounds", "rounds", "way",
               "shot", "learning_signal")


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


def sha256_of(path: Optional[str]) -> Optional[str]:
    """Hex sha256 of a file's bytes (None for no file)."""
    if not path or not os.path.isfile(path):
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_results(command: str, config_name: str, config, out_dir: str, summary: dict[str, Any],
                  *, started: float, samples: Optional[int] = None,
                  checkpoint: Optional[str] = None,
                  init_checkpoint: Optional[str] = None) -> dict[str, Any]:
    import torch

    import recon_fast

    wall = time.perf_counter() - started
    metrics = {k: summary[k] for k in METRIC_KEYS if summary.get(k) is not None}
    checkpoint = checkpoint if checkpoint is not None else _checkpoint_in(out_dir)
    results = {
        "command": command, "config": config_name, "out_dir": out_dir,
        "protocol": summary.get("protocol", "official"),
        "data": _data_of(config), "wall_s": round(wall, 2),
        "metrics": metrics,
        "checkpoint": checkpoint, "checkpoint_sha256": sha256_of(checkpoint),
        "init_checkpoint": init_checkpoint, "init_checkpoint_sha256": sha256_of(init_checkpoint),
        "recon_fast": recon_fast.__version__, "torch": torch.__version__,
        "python": platform.python_version(),
    }
    for key in RECORD_KEYS:
        if key in summary:
            results[key] = summary[key]
    if samples is not None:
        results["samples"] = samples
        results["samples_per_s"] = round(samples / max(wall, 1e-9), 2)
    return results


def format_results(results: dict[str, Any]) -> list[str]:
    """A few human lines (the JSON file holds everything)."""
    head = (f"[summary] {results['command']} --config {results['config']} "
            f"--protocol {results['protocol']}: ")
    if "global_step" in results:
        head += f"{results.get('epoch', 0) + 1} epochs, {results['global_step']} steps, "
    head += f"{results['wall_s']:.0f} s"
    if "samples_per_s" in results:
        head += f", {results['samples']} samples ({results['samples_per_s']:.1f} samples/s)"
    data = ", ".join(f"{split} {name}" for split, name in results["data"].items())
    metrics = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in results["metrics"].items()) or "none"
    lines = [head, f"[summary] data: {data}", f"[summary] metrics: {metrics}"]
    if "learning_signal" in results:  # pretraining's SVM check against the untrained model
        signal = results["learning_signal"]
        lines.append(f"[summary] linear SVM accuracy on {signal['set']}: pretrained "
                     f"{signal['pretrained'] * 100:.2f}% vs untrained "
                     f"{signal['untrained'] * 100:.2f}% (margin {signal['margin'] * 100:+.2f} "
                     f"points)")
    where = os.path.join(results["out_dir"], RESULTS)
    sha = results.get("checkpoint_sha256")
    lines.append(f"[summary] checkpoint: {results['checkpoint'] or 'none'}"
                 f"{f' (sha256 {sha[:12]})' if sha else ''}; results: {where}")
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
               started: float, samples: Optional[int] = None, checkpoint: Optional[str] = None,
               init_checkpoint: Optional[str] = None) -> dict[str, Any]:
    """Build, print and write the end-of-run summary; returns it."""
    results = build_results(command, config_name, config, out_dir, summary, started=started,
                            samples=samples, checkpoint=checkpoint,
                            init_checkpoint=init_checkpoint)
    write_results(results)
    for line in format_results(results):
        print(line, flush=True)
    return results
