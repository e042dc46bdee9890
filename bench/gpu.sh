#!/usr/bin/env bash
# The GPU benchmark in one offline call, under 8 minutes on one H100 (bench/gpu.py says what it
# measures). Writes gpu.json, gpu.md, gpu.log and nvidia-smi.csv into $OUT (default bench/out)
# as it goes. Runs from the checkout with the machine's own python3 and torch (PYTHONPATH=src):
# it installs nothing and needs no network. Real MNIST is used if its four .gz files are in
# bench/mnist/ (git ignores that folder), else a synthetic MNIST-shaped set.
#   bash bench/gpu.sh                 # everything
#   bash bench/gpu.sh --skip compile  # extra arguments go to bench/gpu.py
#   bash bench/gpu.sh --time-limit 900  # a slower GPU: stop after 900 s instead of 460 s
set -uo pipefail
# --time-limit SECONDS (default 460) stops the run there; what finished is already in $OUT.
LIMIT=460
ARGS=()
while (($#)); do
  case "$1" in
    --time-limit) LIMIT="${2:?--time-limit needs seconds}"; shift 2 ;;
    --time-limit=*) LIMIT="${1#*=}"; shift ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/out}"
mkdir -p "$OUT"
# PYTHONPATH=src, $PY, bench/pydeps where jsonschema is missing, and the import check
source bench/gpu_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/nvidia-smi.csv" 2>&1 || true
RAW=()
if ls bench/mnist/*.gz >/dev/null 2>&1; then RAW=(--mnist-raw bench/mnist); fi
timeout "$LIMIT" "$PY" bench/gpu.py --out-dir "$OUT" "${RAW[@]}" "${ARGS[@]}" 2>&1 | tee "$OUT/gpu.log"
exit "${PIPESTATUS[0]}"
