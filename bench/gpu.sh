#!/usr/bin/env bash
# One call on a lent GPU machine (device tool), under 8 minutes:
#   run(command="bash bench/gpu.sh", timeout_s=540)
# Builds a venv there if needed (torch from the machine's own wheels), then runs bench/gpu.py.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/out}"
mkdir -p "$OUT"
if ! python3 -c "import torch, lsqueeze" 2>/dev/null; then
  python3 -m venv /tmp/gpuvenv && . /tmp/gpuvenv/bin/activate
  pip install -q torch==2.14.1 torchvision==0.29.1 pandas pyyaml jsonschema tqdm scikit-learn
  pip install -q --no-deps -e .
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia-smi.csv"
timeout 480 python3 bench/gpu.py --out "$OUT/gpu.json" 2>&1 | tee "$OUT/gpu.log"
