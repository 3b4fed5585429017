"""The GPU check's report: one Markdown page from what the check's stages left in its folder.

    python bench/gpu_summary.py OUT_DIR

Reads OUT_DIR/run.log (stage lines ``STAGE <name> rc=<code> seconds=<s>``), OUT_DIR/tests.xml
(the CUDA tests' junit report) and OUT_DIR/bench_rows.jsonl (one benchmark row per line, written
as each was measured) and writes OUT_DIR/summary.md: the stages, the test counts and failures,
every benchmark row (op, shape, dtype, recon_fast vs the reference measured in the same run) and
each GPU target of targets.py marked met, missed or not measured. Whatever is missing (a stage
that was stopped) is reported as missing, so the page can be written after every stage.
"""

from __future__ import annotations

import json
import os
import re
import sys
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from targets import GPU_TARGETS  # noqa: E402

OURS, REFERENCE = "recon_fast", "reference"


def read_stages(path: str) -> list[dict]:
    stages = []
    if not os.path.isfile(path):
        return stages
    for line in open(path, errors="replace"):
        found = re.search(r"STAGE (\S+) rc=(-?\d+) seconds=(\d+)", line)
        if found:
            stages.append({"name": found.group(1), "rc": int(found.group(2)),
                           "seconds": int(found.group(3))})
    return stages


def read_environment(path: str) -> list[str]:
    if not os.path.isfile(path):
        return []
    return [line.split("ENV ", 1)[1].strip() for line in open(path, errors="replace") if "ENV " in line]


def read_tests(path: str) -> dict | None:
    """Counts and failures of a junit file, None when there is none (or it is unreadable)."""
    if not os.path.isfile(path):
        return None
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError:
        return None
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    failures, skip_reasons = [], {}
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        skipped = case.find("skipped")
        if problem is not None:
            counts["failed"] += 1
            message = (problem.get("message") or problem.text or "").strip().splitlines()
            failures.append((name, message[0][:200] if message else ""))
        elif skipped is not None:
            counts["skipped"] += 1
            reason = (skipped.get("message") or "").strip()[:120]
            skip_reasons[reason] = skip_reasons.get(reason, 0) + 1
        else:
            counts["passed"] += 1
    return {"counts": counts, "failures": failures, "skip_reasons": skip_reasons}


def read_rows(path: str) -> list[dict]:
    rows = []
    if not os.path.isfile(path):
        return rows
    for line in open(path, errors="replace"):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a line cut by a stop
    return rows


def paired(rows: list[dict]) -> list[dict]:
    """One entry per (op, case, dtype, device) with every provider's median ms."""
    keyed: dict[tuple, dict] = {}
    for r in rows:
        key = (r["op"], r["case"], r["dtype"], r["device"])
        entry = keyed.setdefault(key, {"op": r["op"], "case": r["case"], "dtype": r["dtype"],
                                       "device": r["device"], "providers": {}, "target": None})
        entry["providers"][r["provider"]] = r["median_ms"]
        if r.get("target") is not None:
            entry["target"] = r["target"]
    for entry in keyed.values():
        ours, ref = entry["providers"].get(OURS), entry["providers"].get(REFERENCE)
        entry["speedup"] = ref / ours if ours and ref else None
    return list(keyed.values())


def _ms(v) -> str:
    return "-" if v is None else f"{v:.4g}"


def _verdict(speedup, target) -> str:
    if target is None:
        return "-"
    if speedup is None:
        return "not measured"
    return "met" if speedup >= target else "MISSED"


def bench_table(entries: list[dict]) -> list[str]:
    lines = ["| op | workload | dtype | device | recon_fast ms | reference ms | speed-up | target | "
             "verdict | others ms |", "|---|---|---|---|---|---|---|---|---|---|"]
    for e in entries:
        others = ", ".join(f"{k} {_ms(v)}" for k, v in e["providers"].items()
                           if k not in (OURS, REFERENCE))
        speed = f"{e['speedup']:.2f}x" if e["speedup"] else "-"
        target = f">= {e['target']:g}x" if e["target"] else "-"
        lines.append(f"| {e['op']} | {e['case']} | {e['dtype']} | {e['device']} | "
                     f"{_ms(e['providers'].get(OURS))} | {_ms(e['providers'].get(REFERENCE))} | "
                     f"{speed} | {target} | {_verdict(e['speedup'], e['target'])} | {others or '-'} |")
    return lines


def targets_table(entries: list[dict]) -> list[str]:
    lines = ["| op | workload | target | reference | measured | verdict | anchor |",
             "|---|---|---|---|---|---|---|"]
    for t in GPU_TARGETS:
        found = [e for e in entries if e["device"] == "cuda" and (e["op"], e["case"]) == (t.op, t.case)]
        measured = ", ".join(f"{e['dtype']} {e['speedup']:.2f}x" for e in found if e["speedup"])
        verdicts = {_verdict(e["speedup"], t.ratio) for e in found} or {"not measured"}
        verdict = "MISSED" if "MISSED" in verdicts else ("met" if verdicts == {"met"} else "not measured")
        lines.append(f"| {t.op} | {t.case} | >= {t.ratio:g}x | {t.reference} | {measured or '-'} | "
                     f"{verdict} | {t.anchor} |")
    return lines


def summary(out_dir: str) -> str:
    lines = ["# recon_fast GPU check", ""]
    env = read_environment(os.path.join(out_dir, "run.log"))
    lines += [f"- {e}" for e in env] or ["- (no environment recorded)"]
    lines += ["", "## Stages", "", "| stage | exit code | seconds |", "|---|---|---|"]
    stages = read_stages(os.path.join(out_dir, "run.log"))
    lines += [f"| {s['name']} | {s['rc']}{' (stopped by its time limit)' if s['rc'] in (124, 130, 137) else ''} "
              f"| {s['seconds']} |" for s in stages] or ["| (none finished) | - | - |"]
    lines += ["", "## CUDA tests", ""]
    tests = read_tests(os.path.join(out_dir, "tests.xml"))
    if tests is None:
        lines.append("No junit report (the test stage did not run or was killed before writing it).")
    else:
        c = tests["counts"]
        lines.append(f"{c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped")
        lines += [f"- FAILED `{name}`: {message}" for name, message in tests["failures"]]
        lines += [f"- skipped {n}x: {reason}" for reason, n in sorted(tests["skip_reasons"].items())]
    entries = paired(read_rows(os.path.join(out_dir, "bench_rows.jsonl")))
    lines += ["", "## Benchmarks (median ms; each speed-up is over the reference timed in the same run)", ""]
    lines += bench_table(entries) if entries else ["No benchmark rows were recorded."]
    lines += ["", "## GPU targets", ""] + targets_table(entries)
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    out_dir = argv[1]
    text = summary(out_dir)
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
