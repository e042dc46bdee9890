# Sourced by bench/gpu.sh and bench/gpu_reproduce.sh, from the checkout's root with $OUT made:
# the machine's own python3 ($PY) and torch, this checkout's package on PYTHONPATH, and a check,
# in seconds rather than after minutes on the GPU, that everything the jobs import is there.
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
# Pure-Python dependencies the machine may lack (jsonschema), unpacked from wheels for its Python:
#   pip download --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d w jsonschema
#   for f in w/*.whl; do python3 -m zipfile -e "$f" bench/pydeps/; done
PY="${PYTHON:-python3}"
if ! "$PY" -c "import jsonschema" 2>/dev/null && [ -d bench/pydeps ]; then
  export PYTHONPATH="$PYTHONPATH:$PWD/bench/pydeps"
fi
if ! "$PY" -c "import torch, lsqueeze.cli, lsqueeze.jobs.train, lsqueeze.jobs.evaluate, lsqueeze.report.tables, lsqueeze.plan.schema" 2>"$OUT/import-error.txt"; then
  echo "bench: $PY cannot import what the jobs need: $(tail -1 "$OUT/import-error.txt") (see bench/gpu_env.sh for bench/pydeps)" >&2
  exit 2
fi
rm -f "$OUT/import-error.txt"
