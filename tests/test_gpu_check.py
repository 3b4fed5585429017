"""The GPU check's host side: its plan fits one 9-minute command, and its report marks each GPU
target met, missed or not measured from the rows a (possibly stopped) run left behind."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import gpu_summary  # noqa: E402
from targets import GPU_TARGETS, gpu_target  # noqa: E402


def test_dry_run_prints_the_plan_within_nine_minutes():
    done = subprocess.run(["bash", os.path.join(ROOT, "bench", "gpu_check.sh"), "--dry-run"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for stage in ("env", "build", "tests", "bench_ops", "bench_train"):
        assert f"  {stage} " in done.stdout
    budget = int(done.stdout.split("budget ")[1].split(" s")[0])
    assert budget <= 9 * 60 - 20  # room for the kill grace inside one 9-minute command


def test_unknown_argument_is_refused_by_name():
    done = subprocess.run(["bash", os.path.join(ROOT, "bench", "gpu_check.sh"), "--fast"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--fast" in done.stderr


def _row(op, case, provider, ms, dtype="float32", target=None):
    return {"op": op, "case": case, "dtype": dtype, "device": "cuda", "provider": provider,
            "median_ms": ms, "rounds": 5, "target": target}


def test_summary_marks_targets_from_rows_of_a_stopped_run(tmp_path):
    rows = [_row("fps", "B128-N1024-m64", "recon_fast", 0.05, target=72),
            _row("fps", "B128-N1024-m64", "reference", 4.5),           # 90x: met
            _row("knn", "B128-N1024-M64-k32", "recon_fast", 0.2, target=3.8),
            _row("knn", "B128-N1024-M64-k32", "reference", 0.4),       # 2x: missed
            _row("chamfer_l2 fwd+bwd", "4864x32x32", "recon_fast", 0.1)]  # no reference yet
    with open(tmp_path / "bench_rows.jsonl", "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows) + '{"op": "cut off')
    (tmp_path / "run.log").write_text("[gpu_check +1s] ENV machine: NVIDIA H200\n"
                                      "[gpu_check +90s] STAGE build rc=0 seconds=88\n"
                                      "[gpu_check +200s] STAGE tests rc=124 seconds=110\n")
    (tmp_path / "tests.xml").write_text(
        '<testsuites><testsuite><testcase classname="tests.test_fps" name="a"/>'
        '<testcase classname="tests.test_knn" name="b"><failure message="boom"/></testcase>'
        '<testcase classname="tests.test_knn" name="c"><skipped message="no pytorch3d"/></testcase>'
        '</testsuite></testsuites>')
    assert gpu_summary.main(["gpu_summary.py", str(tmp_path)]) == 0
    text = (tmp_path / "summary.md").read_text()
    lines = {line.split(" | ")[1]: line for line in text.splitlines() if line.startswith("| fps |")
             or line.startswith("| knn |") or line.startswith("| chamfer")}
    assert "met" in lines["B128-N1024-m64"] and "90.00x" in lines["B128-N1024-m64"]
    assert "MISSED" in lines["B128-N1024-M64-k32"]
    assert "not measured" in lines["4864x32x32"]
    assert "| tests | 124 (stopped by its time limit) | 110 |" in text
    assert "1 passed, 1 failed, 1 skipped" in text and "FAILED `tests.test_knn::b`: boom" in text
    assert "ENV" not in text and "- machine: NVIDIA H200" in text
    # every target appears in the targets table, measured or not
    for target in GPU_TARGETS:
        assert f"| {target.op} | {target.case} | >= {target.ratio:g}x |" in text


def test_every_benchmark_workload_name_has_its_target():
    assert gpu_target("chamfer_l2 fwd+bwd", "4864x32x32") == 10
    with pytest.raises(KeyError, match="no GPU target for fps B2"):
        gpu_target("fps", "B2")
