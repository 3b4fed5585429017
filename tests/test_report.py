"""recon-fast report: exact mean ± std over runs, per command/config/metric, published column."""

import json
import math
import os

import pytest

from recon_fast.cli import main


def write_run(folder, config, metrics, seed, command="finetune"):
    os.makedirs(folder)
    with open(os.path.join(folder, "results.json"), "w") as f:
        json.dump({"command": command, "config": config, "metrics": metrics, "seed": seed}, f)


def test_report_aggregates_exactly(tmp_path, capsys):
    votes = [0.90, 0.91, 0.93]
    for seed, vote in enumerate(votes):
        write_run(tmp_path / f"s{seed}", "cfgs/full/finetune_scan_hardest.yaml" if seed else
                  "full/finetune_scan_hardest", {"vote": vote, "best": 0.5 + seed / 10}, seed)
    write_run(tmp_path / "few", "embedded_fewshot", {"fewshot_mean_percent": 80.0}, 0, "fewshot")
    out_md = tmp_path / "report" / "table.md"
    assert main(["report"] + [str(tmp_path / d) for d in ("s0", "s1", "s2", "few")] +
                ["--out", str(out_md)]) == 0
    rows = json.load(open(tmp_path / "report" / "table.json"))
    vote = next(r for r in rows if r["metric"] == "vote")
    mean = sum(votes) / 3 * 100  # 91.333...
    std = math.sqrt(sum((100 * v - mean) ** 2 for v in votes) / 2)  # sample std: 1.5275...
    assert vote["n"] == 3 and vote["seeds"] == [0, 1, 2]
    assert vote["mean_percent"] == pytest.approx(mean, abs=1e-9)
    assert vote["std_percent"] == pytest.approx(std, abs=1e-9)
    assert vote["published_percent"] == 91.26 and vote["config"] == "full/finetune_scan_hardest"
    few = next(r for r in rows if r["command"] == "fewshot")
    assert (few["mean_percent"], few["std_percent"], few["n"]) == (80.0, 0.0, 1)
    text = capsys.readouterr().out
    # No protocol field: runs from before it, which ran the official protocol.
    assert vote["protocol"] == "official"
    assert (f"| finetune | full/finetune_scan_hardest | vote | – | {mean:.2f} ± {std:.2f} (n=3) "
            "| 91.26 |") in text
    assert open(out_md).read() in text


def test_report_names_a_missing_run(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "results.json does not exist" in capsys.readouterr().err


def test_report_puts_strict_next_to_official(tmp_path, capsys):
    """Runs of both protocols: separate groups (never averaged together), one Markdown line."""
    strict, official = [0.80, 0.84], [0.88, 0.86, 0.90]
    folders = []
    for protocol, values in (("strict", strict), ("official", official)):
        for seed, value in enumerate(values):
            folder = tmp_path / f"{protocol}{seed}"
            write_run(folder, "full/finetune_scan_hardest", {"vote": value}, seed)
            run = json.load(open(folder / "results.json"))
            json.dump({**run, "protocol": protocol}, open(folder / "results.json", "w"))
            folders.append(str(folder))
    assert main(["report"] + folders + ["--out", str(tmp_path / "t.md")]) == 0
    rows = {r["protocol"]: r for r in json.load(open(tmp_path / "t.json"))}
    assert set(rows) == {"strict", "official"}
    # 80, 84 -> mean 82, sample std sqrt(8) = 2.828...; 88, 86, 90 -> mean 88, std 2.
    assert rows["strict"]["mean_percent"] == pytest.approx(82.0, abs=1e-9)
    assert rows["strict"]["std_percent"] == pytest.approx(math.sqrt(8), abs=1e-9)
    assert (rows["official"]["mean_percent"], rows["official"]["n"]) == (pytest.approx(88.0), 3)
    assert rows["official"]["std_percent"] == pytest.approx(2.0, abs=1e-9)
    assert ("| finetune | full/finetune_scan_hardest | vote | 82.00 ± 2.83 (n=2) | "
            "88.00 ± 2.00 (n=3) | 91.26 |") in capsys.readouterr().out
