#!/usr/bin/env bash
# Table 2's MNIST cells on one GPU machine, without Snakemake, in under 10 minutes (bench/reproduce.py
# says how): every cell trained at 5% of its steps (400k -> 20k; Madry's adversarial training at
# 1%), its white- and black-box attacks on the full test set, tables aggregated after each phase.
# Writes tables.md, table_*.parquet, measurements.parquet and run.json (GPU, commit, wall times)
# into $OUT (default reproduced/table2-gpu) as it goes. Offline, nothing installed: the machine's
# python3 and torch, PYTHONPATH=src, real MNIST from the four .gz files in bench/mnist/.
#   bash bench/gpu_reproduce.sh                       # then commit $OUT under reproduced/
#   bash bench/gpu_reproduce.sh --scale 0.1           # extra arguments go to bench/reproduce.py
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-reproduced/table2-gpu}"
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
RAW=()
if ls bench/mnist/*.gz >/dev/null 2>&1; then
  RAW=(--mnist-raw bench/mnist)
elif [[ " $* " != *" --smoke "* ]]; then
  echo "bench/gpu_reproduce.sh: put MNIST's four .gz files in bench/mnist/ (the machine is offline)" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/nvidia-smi.csv" 2>&1 || true
timeout 580 "$PY" bench/reproduce.py --out-dir "$OUT" "${RAW[@]}" "$@" 2>&1 | tee "$OUT/reproduce.log"
exit "${PIPESTATUS[0]}"
