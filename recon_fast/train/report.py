"""`recon-fast report`: several runs (seeds) of the same command and config, aggregated into
mean ± std per metric and protocol (strict next to official), next to the numbers the paper
publishes, as Markdown and JSON.

Each run folder holds the results.json that every command writes (recon_fast.train.results).
The std is the sample standard deviation (n - 1), the spread a reader expects over seeds; a
single run reports std 0.
"""

from __future__ import annotations

import json
import math
import os
from typing import Iterable

from recon_fast.errors import InputError
from recon_fast.train.results import RESULTS

# Published ReCon numbers (ICML 2023, %), by preset and metric, for the comparison column.
PUBLISHED = {
    ("full/finetune_scan_hardest", "vote"): 91.26,
    ("full/finetune_scan_objbg", "vote"): 95.35,
    ("full/finetune_scan_objonly", "vote"): 93.80,
    ("full/finetune_modelnet", "vote"): 94.5,
    ("full/finetune_modelnet_8k", "vote"): 94.7,
    ("svm/modelnet40", "svm_accuracy"): 93.4,
    ("zeroshot/modelnet10", "zero_shot_accuracy"): 75.6,
    ("zeroshot/modelnet40", "zero_shot_accuracy"): 61.7,
}


def _config_key(name: str) -> str:
    """'cfgs/full/finetune_scan_hardest.yaml' and 'full/finetune_scan_hardest' alike."""
    name = name[len("cfgs/"):] if name.startswith("cfgs/") else name
    return name[:-5] if name.endswith(".yaml") else name


def read_runs(folders: Iterable[str]) -> list[dict]:
    runs = []
    for folder in folders:
        path = folder if folder.endswith(".json") else os.path.join(folder, RESULTS)
        if not os.path.isfile(path):
            raise InputError(f"recon-fast report: {path} does not exist (each run folder holds "
                             f"the {RESULTS} its command wrote)")
        with open(path) as f:
            try:
                runs.append(json.load(f))
            except json.JSONDecodeError as err:
                raise InputError(f"recon-fast report: {path} is not valid JSON: {err}") from err
    return runs


def _percent(name: str, value: float) -> float:
    return value if name.endswith("_percent") else 100.0 * value


def aggregate(runs: list[dict]) -> list[dict]:
    """One row per (command, config, metric, protocol): n, mean and sample std in percent, the
    seeds. Runs whose results.json has no protocol predate the field and ran the official one."""
    groups: dict[tuple[str, str, str, str], list[tuple[float, object]]] = {}
    for run in runs:
        key = (run.get("command", "?"), _config_key(run.get("config", "?")))
        protocol = run.get("protocol") or "official"
        for metric, value in (run.get("metrics") or {}).items():
            if isinstance(value, (int, float)):
                groups.setdefault(key + (metric, protocol), []).append(
                    (_percent(metric, float(value)), run.get("seed")))
    rows = []
    for (command, config, metric, protocol), values in sorted(groups.items()):
        numbers = [v for v, _ in values]
        n = len(numbers)
        mean = sum(numbers) / n
        std = math.sqrt(sum((v - mean) ** 2 for v in numbers) / (n - 1)) if n > 1 else 0.0
        rows.append({"command": command, "config": config, "metric": metric,
                     "protocol": protocol, "n": n, "mean_percent": mean, "std_percent": std,
                     "seeds": [s for _, s in values],
                     "published_percent": PUBLISHED.get((config, metric))})
    return rows


def _cell(row) -> str:
    if row is None:
        return "–"
    return f"{row['mean_percent']:.2f} ± {row['std_percent']:.2f} (n={row['n']})"


def to_markdown(rows: list[dict]) -> str:
    """One line per (command, config, metric): strict and official side by side, then the
    published number (which the official protocol produced)."""
    lines = ["| command | config | metric | strict mean ± std (%) | official mean ± std (%) | "
             "published (%) |", "|---|---|---|---|---|---|"]
    paired: dict[tuple[str, str, str], dict[str, dict]] = {}
    for r in rows:
        paired.setdefault((r["command"], r["config"], r["metric"]), {})[r["protocol"]] = r
    for (command, config, metric), by_protocol in paired.items():
        published = PUBLISHED.get((config, metric))
        published = "–" if published is None else f"{published:.2f}"
        lines.append(f"| {command} | {config} | {metric} | {_cell(by_protocol.get('strict'))} | "
                     f"{_cell(by_protocol.get('official'))} | {published} |")
    return "\n".join(lines) + "\n"
