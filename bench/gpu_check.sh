#!/usr/bin/env bash
# One-shot check on a GPU machine: build the extension for this GPU, run the CUDA tests, run the
# GPU benchmarks, and leave a report under $OUT (default bench/results/gpu). Designed to finish in
# well under 8 minutes on one H100/H200 with the machine's preinstalled torch (no downloads).
#
#   bash bench/gpu_check.sh            # from the repository root
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
log() { echo "[gpu_check $(date +%T)] $*" | tee -a "$OUT/summary.txt"; }

log "machine: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)"
log "$($PY -c 'import torch, triton; print("torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__)')"

# Build only for this GPU's architecture (fast) against the installed torch.
arch=$($PY -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')
export TORCH_CUDA_ARCH_LIST="$arch" MAX_JOBS=$(nproc) RECON_FAST_FORCE_CUDA=1
log "building for sm_${arch/./}"
start=$(date +%s)
if ! $PY setup.py build_ext --inplace > "$OUT/build.log" 2>&1; then
  log "BUILD FAILED (tail of build.log follows)"; tail -40 "$OUT/build.log" | tee -a "$OUT/summary.txt"; exit 1
fi
log "build took $(( $(date +%s) - start )) s"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

log "CUDA tests (the parity suite on the GPU)"
timeout 300 $PY -m pytest tests -q -k "cuda" -p no:cacheprovider --junitxml="$OUT/tests.xml" \
  > "$OUT/tests.log" 2>&1
status_tests=$?
tail -5 "$OUT/tests.log" | tee -a "$OUT/summary.txt"

log "GPU benchmarks"
timeout 300 $PY -m pytest bench -q -k "cuda" -p no:cacheprovider --benchmark-json="$OUT/bench.json" \
  > "$OUT/bench.log" 2>&1
status_bench=$?
cp bench/results/*_cuda.md "$OUT/" 2>/dev/null
sed -n '/recon_fast benchmark summary/,/written /p' "$OUT/bench.log" | tee -a "$OUT/summary.txt"

log "exit codes: tests $status_tests, bench $status_bench"
exit $(( status_tests != 0 || status_bench != 0 ))
