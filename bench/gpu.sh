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
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
# Pure-Python dependencies the machine may lack (jsonschema), unpacked from wheels for its Python:
#   pip download --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d w jsonschema
#   for f in w/*.whl; do python3 -m zipfile -e "$f" bench/pydeps/; done
PY="${PYTHON:-python3}"
if ! "$PY" -c "import jsonschema" 2>/dev/null && [ -d bench/pydeps ]; then
  export PYTHONPATH="$PYTHONPATH:$PWD/bench/pydeps"
fi
# Fail in seconds, not after minutes on the GPU, when a job's imports are missing.
if ! "$PY" -c "import torch, lsqueeze.cli, lsqueeze.train, lsqueeze.evaluate, lsqueeze.tables, lsqueeze.schema" 2>"$OUT/import-error.txt"; then
  echo "bench: $PY cannot import what the jobs need: $(tail -1 "$OUT/import-error.txt") (see bench/gpu.sh for bench/pydeps)" >&2
  exit 2
fi
rm -f "$OUT/import-error.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/nvidia-smi.csv" 2>&1 || true
RAW=()
if ls bench/mnist/*.gz >/dev/null 2>&1; then RAW=(--mnist-raw bench/mnist); fi
timeout 460 "$PY" bench/gpu.py --out-dir "$OUT" "${RAW[@]}" "$@" 2>&1 | tee "$OUT/gpu.log"
exit "${PIPESTATUS[0]}"
