#!/usr/bin/env bash
# The GPU benchmark in one offline call, under 8 minutes on one H100 (bench/gpu.py says what it
# measures). Writes gpu.json, gpu.md, gpu.log and nvidia-smi.csv into $OUT (default bench/out)
# as it goes. Runs from the checkout with the machine's own python3 and torch (PYTHONPATH=src):
# it installs nothing and needs no network. Real MNIST is used if its four .gz files are in
# bench/mnist/ (git ignores that folder), else a synthetic MNIST-shaped set.
#   bash bench/gpu.sh                 # everything
#   bash bench/gpu.sh --skip compile  # extra arguments go to bench/gpu.py
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/out}"
mkdir -p "$OUT"
# PYTHONPATH=src, $PY, bench/pydeps where jsonschema is missing, and the import check
source bench/gpu_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/nvidia-smi.csv" 2>&1 || true
RAW=()
if ls bench/mnist/*.gz >/dev/null 2>&1; then RAW=(--mnist-raw bench/mnist); fi
timeout 460 "$PY" bench/gpu.py --out-dir "$OUT" "${RAW[@]}" "$@" 2>&1 | tee "$OUT/gpu.log"
exit "${PIPESTATUS[0]}"
