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
# --time-limit SECONDS (default 580) stops the run there; what finished is already in $OUT.
LIMIT=580
ARGS=()
while (($#)); do
  case "$1" in
    --time-limit) LIMIT="${2:?--time-limit needs seconds}"; shift 2 ;;
    --time-limit=*) LIMIT="${1#*=}"; shift ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
cd "$(dirname "$0")/.."
OUT="${OUT:-reproduced/table2-gpu}"
mkdir -p "$OUT"
# PYTHONPATH=src, $PY, bench/pydeps where jsonschema is missing, and the import check
source bench/gpu_env.sh
RAW=()
if ls bench/mnist/*.gz >/dev/null 2>&1; then
  RAW=(--mnist-raw bench/mnist)
elif [[ " ${ARGS[*]} " != *" --smoke "* ]]; then
  echo "bench/gpu_reproduce.sh: put MNIST's four .gz files in bench/mnist/ (the machine is offline)" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/nvidia-smi.csv" 2>&1 || true
timeout "$LIMIT" "$PY" bench/reproduce.py --out-dir "$OUT" "${RAW[@]}" "${ARGS[@]}" 2>&1 | tee "$OUT/reproduce.log"
exit "${PIPESTATUS[0]}"
