"""Pipeline-level timings: the paper preset's dry run (job count), a no-op rerun, and the offline
demo end to end on this machine.

    .venv/bin/python bench/bench_pipeline.py [--skip-demo]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def snakemake(workdir, *args) -> tuple[float, str]:
    cmd = [SNAKEMAKE, "-s", str(common.REPO / "Snakefile"), "--directory", str(workdir), *args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stdout[-3000:] + proc.stderr[-3000:])
    return time.perf_counter() - t0, proc.stdout + proc.stderr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-demo", action="store_true")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        dry, out = snakemake(tmp, "-n", "--quiet", "rules", "--cores", "all")
        jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M))
        rows.append(("paper preset `snakemake -n` (cold, empty results)", f"{dry:.2f} s",
                     f"{jobs.get('total')} jobs, {jobs.get('train')} trainings"))
        if not args.skip_demo:
            # as `make demo` runs it (on a 2-core machine)
            demo = ("--cores", "2", "--scheduler", "greedy",
                    "--configfile", str(common.REPO / "params" / "demo.yaml"))
            wall, _ = snakemake(tmp, *demo)
            rows.append(("demo preset end to end, `--cores 2 --scheduler greedy` (fresh dir, data included)",
                         f"{wall:.0f} s", "every table and figure"))
            print(f"demo end to end: {wall:.0f} s", flush=True)
            noop, out = snakemake(tmp, *demo)
            assert "Nothing to be done" in out, "the rerun was not a no-op (code edited meanwhile?)"
            rows.append(("demo preset no-op rerun", f"{noop:.2f} s", "Nothing to be done"))
        shutil.rmtree(tmp, ignore_errors=True)
    table = "| what | time | notes |\n|---|---|---|\n" + "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows)
    body = (f"## Pipeline\n\n`.venv/bin/python bench/bench_pipeline.py` — {common.machine()}.\n\n{table}\n")
    print(body)
    common.write_section("bench_pipeline", body)


if __name__ == "__main__":
    main()
