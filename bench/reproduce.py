"""A paper table on one GPU machine without Snakemake: `bash bench/gpu_reproduce.sh` runs it.

Runs a preset's jobs through the package CLI exactly as the workflow's rules do (`lsqueeze data`,
`train`, `craft`, `evaluate`, `transfer`, `aggregate`), with the steps of every cell scaled by
`--scale` (400k -> 20k at 0.05; the ratios between a table's training lengths are kept, so rows
that differ only in steps stay distinct cells) and the attacks on the whole test set. Up to
`--jobs` jobs share the GPU (LSQUEEZE_JOBS_PER_GPU); each has its own `timeout`. After every
phase the tables are aggregated from what has finished, and OUT_DIR gets tables.md,
table_*.parquet, measurements.parquet and run.json (GPU, commit, wall time per phase, every
command's exit status), so a run cut off by its time limit still leaves its finished part.
Models and adversarial sets stay in a scratch directory (--work), outside OUT_DIR, at the paths
the workflow gives them (lsqueeze.plan.layout: the same model store layout, the same tables plan).

`--smoke`: the same on the CPU at toy size (digits28 instead of MNIST, a few steps, 50 test
images), as the test suite runs it.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lsqueeze.plan.build import build_plan, load_config
from lsqueeze.plan.layout import Layout

REPO = Path(__file__).resolve().parents[1]


def scaled_config(config: dict, scale: float, adv_scale: float, smoke: bool,
                  rows: int | None = None) -> dict:
    config = copy.deepcopy(config)
    if rows:  # the first rows of each table only (a quicker partial run)
        for table in config.get("tables", []):
            table["rows"] = table["rows"][:rows]

    def scale_cell(cell):
        if isinstance(cell, dict):
            f = adv_scale if cell.get("method") == "adv" else scale
            cell["steps"] = max(1, int(round(int(cell["steps"]) * f)))
            if smoke and cell.get("dataset") == "mnist":
                cell["dataset"] = "digits28"  # scikit-learn's digits, MNIST-shaped and offline

    for cell in config.get("cells", {}).values():
        scale_cell(cell)
    for table in config.get("tables", []):
        for row in table["rows"]:
            scale_cell(row["cell"])
    if smoke:
        config["blackbox_sources"] = {("digits28" if k == "mnist" else k): v
                                      for k, v in config.get("blackbox_sources", {}).items()}
    return config


class Runner:
    def __init__(self, out: Path, work: Path, jobs: int):
        self.out, self.work, self.jobs = out, work, jobs
        self.log = []
        path = os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))
        self.env = {**os.environ, "PYTHONPATH": path,
                    "LSQUEEZE_JOBS_PER_GPU": str(jobs), "OMP_NUM_THREADS": "1",
                    "LSQUEEZE_GPU_LOCK_DIR": str(work / "gpu-locks")}

    def run(self, name: str, args: list[str], timeout: float) -> bool:
        log = self.work / "logs" / f"{name.replace('/', '_')}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        with open(log, "w") as fh:
            try:
                rc = subprocess.run([sys.executable, "-m", "lsqueeze", *args], env=self.env,
                                    stdout=fh, stderr=subprocess.STDOUT, timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
        wall = time.perf_counter() - t0
        tail = "" if rc == 0 else log.read_text()[-400:]
        self.log.append({"job": name, "rc": rc, "wall_s": round(wall, 2), "log_tail": tail})
        print(f"{name}: rc {rc}, {wall:.1f} s", flush=True)
        return rc == 0

    def phase(self, jobs: list[tuple[str, list[str]]], timeout: float) -> None:
        with ThreadPoolExecutor(self.jobs) as pool:
            list(pool.map(lambda j: self.run(j[0], j[1], timeout), jobs))


def gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def commit() -> str:
    out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                         text=True)
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return (out.stdout.strip() or "?") + (" (with uncommitted changes)" if dirty else "")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default=str(REPO / "params" / "table2.yaml"))
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--work", help="scratch for data, models and adversarial sets (default: a temp dir)")
    ap.add_argument("--scale", type=float, default=0.05, help="cell steps × this")
    ap.add_argument("--adv-scale", type=float, default=0.01,
                    help="adversarially trained cells' steps × this (each step is 41 passes)")
    ap.add_argument("--jobs", type=int, default=4, help="jobs sharing the GPU at once")
    ap.add_argument("--mnist-raw", help="directory with MNIST's four .gz files")
    ap.add_argument("--n-test", type=int, default=None, help="first n test images (default: all)")
    ap.add_argument("--rows", type=int, help="only the first ROWS rows of each table")
    ap.add_argument("--train-timeout", type=float, default=360)
    ap.add_argument("--attack-timeout", type=float, default=120)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work or tempfile.mkdtemp(prefix="lsqueeze-reproduce-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        args.n_test = args.n_test or 50
    base = load_config(args.preset)
    config = scaled_config(base, args.scale, args.adv_scale, args.smoke, args.rows)
    if args.n_test:
        config.setdefault("eval", {})["n_test"] = args.n_test
    config.update(results=str(work / "results"), data_dir=str(work / "data"),
                  store=str(work / "store"))
    plan = build_plan(config)
    layout = Layout(plan)
    runner = Runner(out, work, args.jobs)
    record = {"preset": Path(args.preset).name, "gpu": gpu_name(), "commit": commit(),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "scale": args.scale, "adv_scale": args.adv_scale, "jobs_per_gpu": args.jobs,
              "n_test": args.n_test or "all", "cells": {c: v["steps"] for c, v in plan.cells.items()},
              "phases": {}, "jobs": runner.log}
    plan_file = work / "plan.json"
    plan_file.write_text(json.dumps({**layout.tables_plan(), "analysis_files": {}},
                                    sort_keys=True, default=str))  # no analyses run here
    n = ["--n", str(args.n_test)] if args.n_test else []
    bs = ["--batch-size", str(config.get("eval", {}).get("batch_size", 500))]
    t_start = time.perf_counter()

    def finish(phase, t0):
        record["phases"][phase] = round(time.perf_counter() - t0, 1)
        record["wall_s"] = round(time.perf_counter() - t_start, 1)
        fragments = [p for p in layout.fragments() if Path(p).is_file()]
        if fragments:
            runner.run(f"aggregate-after-{phase}",
                       ["aggregate", "--plan", str(plan_file), "--inputs", *fragments,
                        "--reference", str(REPO / "src" / "lsqueeze" / "data" / "paper_tables.csv"),
                        "--out-dir", str(out)], args.attack_timeout)
        (out / "run.json").write_text(json.dumps(record, indent=1, default=str) + "\n")

    t0 = time.perf_counter()
    for ds in sorted({c["dataset"] for c in plan.cells.values()}):
        cmd = ["data", "--dataset", ds, "--out-dir", layout.split_dir(ds)]
        if ds == "mnist" and args.mnist_raw:
            raw = work / "raw-mnist"  # decompressed files go here, not into the carried folder
            raw.mkdir(exist_ok=True)
            for gz in Path(args.mnist_raw).glob("*.gz"):
                shutil.copy(gz, raw / gz.name)
            cmd += ["--raw-dir", str(raw)]
        runner.run(f"data/{ds}", cmd, args.train_timeout)
    finish("data", t0)

    t0 = time.perf_counter()
    by_cost = sorted(plan.cells, key=lambda c: -plan.cells[c]["steps"]
                     * (41 if plan.cells[c]["method"] == "adv" else 1))
    opts = json.dumps(config.get("train", {}))
    runner.phase([(f"train/{c}", ["train", "--spec", layout.spec_json(c),
                                  "--data-dir", layout.split_dir(plan.cells[c]["dataset"]),
                                  "--out-dir", layout.cell_dir(c), "--no-progress",
                                  "--options", opts]) for c in by_cost], args.train_timeout)
    finish("train", t0)

    def attack_job(name, command, cell, aid, out):
        """One crafting or white-box job: the same arguments, another command and output."""
        ds = plan.cells[cell]["dataset"]
        return (f"{name}/{cell}/{aid}", [
            command, "--spec", layout.spec_json(cell), "--model", layout.model(cell),
            "--data-dir", layout.split_dir(ds), "--attack", layout.attack_json(aid, ds),
            *n, *bs, "--out", str(out)])

    t0 = time.perf_counter()
    crafts = [attack_job("craft", "craft", src, aid, layout.adv_set(src, aid))
              for src, aid in sorted(plan.crafted)]
    white = [attack_job("white", "evaluate", c, aid, layout.white(c, aid))
             for c, aid in sorted(plan.white)]
    runner.phase(crafts + white, args.attack_timeout)
    finish("white-box and crafting", t0)

    t0 = time.perf_counter()
    runner.phase([(f"black/{t}/{aid}", [
        "transfer", "--spec", layout.spec_json(t), "--model", layout.model(t),
        "--adv-set", layout.adv_set(s, aid), "--source-metrics", layout.metrics(s),
        "--attack", layout.attack_json(aid, plan.cells[t]["dataset"]),
        "--out", layout.black(t, s, aid)])
        for t, s, aid in sorted(plan.black)], args.attack_timeout)
    finish("black-box", t0)
    return record


if __name__ == "__main__":
    main()
