#!/usr/bin/env bash
# The one-call GPU check: build the extension for this GPU's architecture, run the CUDA tests, time
# every op and the pretrain and finetune steps, and leave a report under $OUT. Made for ONE command
# of at most 9 minutes on one H100/H200 with that machine's own torch and triton (no downloads,
# no open_clip needed: the tests that need it skip, the train-step bench uses a same-shaped stand-in).
#
#   bash bench/gpu_check.sh              # from anywhere; OUT defaults to bench/results/gpu
#   bash bench/gpu_check.sh --dry-run    # print the plan and its time budget, run nothing
#
# Stages run cheapest and most informative first, each under its own SIGINT timeout (pytest then
# still writes its junit file and the rows measured so far), with per-test timeouts inside; every
# benchmark row is appended to bench_rows.jsonl as soon as it is measured and summary.md is
# rewritten after every stage, so a stop loses only the stage that was running.
#
# Files under $OUT (7): summary.md, run.log, build.log, tests.log, tests.xml, bench.log,
# bench_rows.jsonl.
#
# Environment: OUT, PYTHON (default python3), GPU_CHECK_BUDGET (seconds for the whole check,
# default 520), GPU_CHECK_ARCH (e.g. 9.0: build for this arch without asking a GPU; lets the
# build and test-collection stages run on a machine without one), GPU_CHECK_STAGES (the stages to
# run, default "env build tests bench_ops bench_train"), GPU_CHECK_WORKERS (pytest-xdist workers
# for the tests, default 4; 0 runs them in one process).
set -uo pipefail
cd "$(dirname "$0")/.."

DRY_RUN=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$arg' (only --dry-run)" >&2; exit 2 ;;
  esac
done

OUT=${OUT:-bench/results/gpu}
PY=${PYTHON:-python3}
BUDGET=${GPU_CHECK_BUDGET:-520}
RUN_STAGES=${GPU_CHECK_STAGES:-"env build tests bench_ops bench_train"}
KILL_GRACE=15   # seconds between the SIGINT and a SIGKILL of a stage that ignores it
START=$(date +%s)

# name | cap in seconds | per-test timeout | what it does
PLAN=(
  "env|20|-|GPU, driver, torch, CUDA, triton and Python versions"
  "build|170|-|setup.py build_ext --inplace for this GPU's arch only (TORCH_CUDA_ARCH_LIST from torch.cuda.get_device_capability), RECON_FAST_FORCE_CUDA=1, MAX_JOBS=nproc"
  "tests|110|90|pytest tests -m 'cuda or cuda_build': every CUDA/GPU test (kernels vs references, Triton attention on the GPU, registration), 4 xdist workers when pytest-xdist is there"
  "bench_ops|120|60|pytest bench -m cuda, fps, knn, chamfer, group, then attention (Triton compiles): parity first, then recon_fast vs the reference in the same run"
  "bench_train|190|170|pytest bench/bench_train_step.py -m cuda: pretrain (ReCon-base B128) and finetune (B32 N2048) steps, bf16+compile vs fp32 eager"
)

stage_field() { local IFS='|'; read -r -a f <<< "$1"; echo "${f[$2]}"; }

if [ "$DRY_RUN" = 1 ]; then
  echo "gpu_check plan (budget ${BUDGET} s for the whole check; each stage gets min(cap, time left - ${KILL_GRACE} s)):"
  total=0
  for entry in "${PLAN[@]}"; do
    name=$(stage_field "$entry" 0); cap=$(stage_field "$entry" 1)
    per_test=$(stage_field "$entry" 2); what=$(stage_field "$entry" 3)
    case " $RUN_STAGES " in *" $name "*) ;; *) continue ;; esac
    total=$((total + cap))
    printf '  %-12s cap %4s s  per-test %4s s  %s\n' "$name" "$cap" "$per_test" "$what"
  done
  echo "  sum of caps ${total} s; the budget stops the check at ${BUDGET} s; summary.md is rewritten after every stage"
  echo "  report: \$OUT=${OUT} (summary.md run.log build.log tests.log tests.xml bench.log bench_rows.jsonl)"
  echo "  run with a device timeout of at least $((BUDGET + 30)) s"
  exit 0
fi

mkdir -p "$OUT"
rm -f "$OUT"/summary.md "$OUT"/run.log "$OUT"/build.log "$OUT"/tests.log "$OUT"/tests.xml \
  "$OUT"/bench.log "$OUT"/bench_rows.jsonl
export PYTHONUNBUFFERED=1 RECON_FAST_BENCH_ROWS="$PWD/$OUT/bench_rows.jsonl"
case "$OUT" in /*) export RECON_FAST_BENCH_ROWS="$OUT/bench_rows.jsonl" ;; esac

log() { echo "[gpu_check +$(( $(date +%s) - START ))s] $*" | tee -a "$OUT/run.log"; }
summarise() { $PY bench/gpu_summary.py "$OUT" || log "summary failed"; }

# Seconds a stage may take: its cap, or what is left of the budget less the kill grace.
stage_limit() {
  local cap=$1 left=$(( BUDGET - ($(date +%s) - START) - KILL_GRACE ))
  [ "$left" -lt "$cap" ] && cap=$left
  echo "$cap"
}

# run_stage NAME CAP LOG COMMAND...: the command under `timeout -s INT`, its output appended to
# $OUT/LOG, its end logged as a STAGE line.
run_stage() {
  local name=$1 cap=$2 stage_log="$OUT/$3"; shift 3
  case " $RUN_STAGES " in *" $name "*) ;; *) log "skip $name (not in GPU_CHECK_STAGES)"; return 0 ;; esac
  local limit; limit=$(stage_limit "$cap")
  if [ "$limit" -lt 10 ]; then
    log "STAGE $name rc=124 seconds=0 (no time left in the ${BUDGET} s budget)"; summarise; return 124
  fi
  log "start $name (limit ${limit} s)"
  local t0; t0=$(date +%s)
  timeout -s INT -k "$KILL_GRACE" "$limit" "$@" >> "$stage_log" 2>&1
  local rc=$?
  log "STAGE $name rc=$rc seconds=$(( $(date +%s) - t0 ))"
  summarise
  return $rc
}

env_info() {
  log "ENV machine: $(timeout 10 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)"
  log "ENV $(timeout 60 $PY -c 'import sys, torch, triton; print("python", sys.version.split()[0], "| torch", torch.__version__, "| cuda", torch.version.cuda, "| triton", triton.__version__)' 2>&1 | tail -1)"
  log "ENV commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown), date: $(date -u +%Y-%m-%dT%H:%MZ)"
  for mod in pytest_timeout xdist pytest_benchmark timm open_clip; do
    $PY -c "import $mod" 2>/dev/null && log "ENV has $mod" || log "ENV no $mod"
  done
}

# A module that fails to import (a package missing there) must not stop the other modules' tests.
PYTEST_COMMON=(-p no:cacheprovider -rfEs --continue-on-collection-errors)
if $PY -c "import pytest_timeout" 2>/dev/null; then HAVE_TIMEOUT=1; else HAVE_TIMEOUT=0; fi
per_test() { [ "$HAVE_TIMEOUT" = 1 ] && echo "--timeout=$1 --timeout-method=signal"; }
WORKERS=${GPU_CHECK_WORKERS:-4}
workers() { [ "$WORKERS" -gt 0 ] && $PY -c "import xdist" 2>/dev/null && echo "-n $WORKERS"; }

env_t0=$(date +%s)
env_info
log "STAGE env rc=0 seconds=$(( $(date +%s) - env_t0 ))"

arch=${GPU_CHECK_ARCH:-$($PY -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())' 2>/dev/null)}
if [ -z "$arch" ]; then
  log "no CUDA device visible to torch and no GPU_CHECK_ARCH: cannot pick an arch to build for"
  summarise; exit 1
fi
log "building for sm_${arch/./} only"
run_stage build 170 build.log env TORCH_CUDA_ARCH_LIST="$arch" MAX_JOBS="$(nproc)" \
  RECON_FAST_FORCE_CUDA=1 $PY setup.py build_ext --inplace
status_build=$?
if [ "$status_build" != 0 ] && case " $RUN_STAGES " in *" build "*) true ;; *) false ;; esac; then
  log "BUILD FAILED (rc $status_build); the tail of build.log:"; tail -30 "$OUT/build.log" | tee -a "$OUT/run.log"
  summarise; cat "$OUT/summary.md"; exit 1
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
$PY -c 'import recon_fast; print("ENV build_info", recon_fast.build_info())' 2>&1 | tail -1 | sed 's/^/[gpu_check] /' | tee -a "$OUT/run.log"

# shellcheck disable=SC2046 # per_test and workers expand to several words on purpose
# The CUDA ops' tests first (quick, and what the benchmarks rest on), then the rest of tests/
# (pytest skips a file given twice), the Triton attention tests with their compiles among them.
FIRST_TESTS=$(ls tests/test_cuda_build.py tests/test_fps.py tests/test_knn.py tests/test_chamfer.py \
  tests/test_chamfer_loss.py tests/test_gather_points.py tests/test_group.py 2>/dev/null | tr '\n' ' ')
# shellcheck disable=SC2086
run_stage tests 110 tests.log $PY -m pytest $FIRST_TESTS tests -m "cuda or cuda_build" "${PYTEST_COMMON[@]}" \
  $(workers) $(per_test 90) --junitxml="$OUT/tests.xml"
status_tests=$?
tail -3 "$OUT/tests.log"

# shellcheck disable=SC2046
# The CUDA ops first, the attention last (its Triton kernels compile on first use).
run_stage bench_ops 120 bench.log $PY -m pytest bench/bench_fps.py bench/bench_knn.py \
  bench/bench_chamfer.py bench/bench_group.py bench/bench_attention.py -m cuda "${PYTEST_COMMON[@]}" \
  $(per_test 60)
status_ops=$?

# shellcheck disable=SC2046
run_stage bench_train 190 bench.log $PY -m pytest bench/bench_train_step.py -m cuda -s \
  "${PYTEST_COMMON[@]}" $(per_test 170)
status_train=$?

log "exit codes: build $status_build, tests $status_tests, bench_ops $status_ops, bench_train $status_train"
summarise
cat "$OUT/summary.md"
exit $(( status_build != 0 || status_tests != 0 || status_ops != 0 || status_train != 0 ))
