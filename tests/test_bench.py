"""The benchmark scripts run (tiny sizes, CPU): a lent GPU's minutes and a long CPU run are never
spent finding a bug in them. Speed itself is measured by the scripts, never asserted here."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory):
    import common

    if not common.MIRROR.exists():
        pytest.skip(f"no local MNIST copy at {common.MIRROR} (set LSQUEEZE_MNIST_MIRROR)")
    return common.mnist(tmp_path_factory.mktemp("mnist"))


def test_gpu_script_runs_offline_on_cpu_smoke(tmp_path):
    """bench/gpu.sh as a GPU machine runs it (the interpreter's own torch, PYTHONPATH=src, no
    install, no network), with --smoke: every section fills gpu.json and gpu.md."""
    script = (REPO / "bench" / "gpu.sh").read_text()
    assert "pip install" not in script and "http" not in script
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    run = subprocess.run(["bash", str(REPO / "bench" / "gpu.sh"), "--smoke"], env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    res = json.loads((tmp_path / "gpu.json").read_text())
    mnist = res["mnist"]
    assert [(r["jobs"], r["cuda_graphs"]) for r in mnist["runs"]] == [(1, False), (1, True), (2, True)]
    assert all(r["aggregate_steps_per_s"] > 0 for r in mnist["runs"])
    assert mnist["same_seed"]["max_abs_weight_diff"] == 0  # on a CPU both runs are the plain loop
    archs = {r["arch"] for r in res["wrn"]}
    assert "wrn-28-10" in archs
    for r in res["wrn"]:
        assert r["images_per_s"] > 0 and r["flops_per_step"] > 0 and r["precision"] in ("bf16", "fp32")
    assert {(r["arch"], r["precision"]) for r in res["pgd"]} == {(a, p) for a in archs
                                                                for p in ("fp32", "bf16")}
    md = (tmp_path / "gpu.md").read_text()
    assert "aggregate steps/s" in md and "MFU" in md and "images × steps/s" in md


def test_reproduce_script_runs_a_table_through_the_cli(tmp_path):
    """bench/gpu_reproduce.sh at toy size: digits28 for MNIST, one row of Table 2 (+ the
    black-box source), every phase through the package CLI, tables written as it goes."""
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable,
           "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    run = subprocess.run(["bash", str(REPO / "bench" / "gpu_reproduce.sh"), "--smoke", "--rows", "1",
                          "--scale", "0.00005", "--jobs", "2", "--work", str(tmp_path / "work")],
                         env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    out = tmp_path / "out"
    record = json.loads((out / "run.json").read_text())
    assert all(job["rc"] == 0 for job in record["jobs"]), record["jobs"]
    kinds = {job["job"].split("/")[0] for job in record["jobs"]}
    assert {"data", "train", "craft", "white", "black"} <= kinds
    assert set(record["phases"]) == {"data", "train", "white-box and crafting", "black-box"}
    assert record["gpu"] and record["commit"] and record["wall_s"] > 0
    import pandas as pd

    table = pd.read_parquet(out / "table_2.parquet")
    assert len(table) == 1 and table.notna().all().all()
    assert (out / "measurements.parquet").exists() and "Table 2" in (out / "tables.md").read_text()


def test_flop_count_of_a_training_step_is_about_three_forwards(one_thread):
    import gpu
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from lsqueeze.plan.build import RECIPES
    from lsqueeze.science.models import build_model

    recipe = RECIPES["mnist"]
    model = build_model(recipe, (1, 28, 28))
    x, y = torch.rand(50, 1, 28, 28), torch.randint(0, 10, (50,))
    with FlopCounterMode(display=False) as fwd:
        model(x)
    step = gpu.flops_per_step(model, recipe, x, y)
    assert 2.5 < step / fwd.get_total_flops() < 3.5  # backward ≈ 2× forward


def test_pgd_bench_checks_identical_answers(mnist_dir, one_thread):
    import bench_pgd

    ratio = bench_pgd.main(["--n", "8", "--steps", "2", "--repeats", "1", "--train-steps", "5",
                            "--data", str(mnist_dir), "--no-write"])
    assert ratio > 0


def test_train_bench_compares_four_loops(mnist_dir, one_thread):
    import bench_train

    best = bench_train.main(["--arch", "demo", "--steps", "5", "--rounds", "1",
                             "--data", str(mnist_dir), "--no-write"])
    assert len(best) == 4
    assert all(rate > 0 and 0 <= acc <= 1 for rate, acc in best.values())


def test_precision_bench_times_both_precisions(mnist_dir, one_thread, tmp_path, monkeypatch):
    import bench_precision
    import common

    monkeypatch.setattr(common, "REPO", tmp_path)  # its section goes to a scratch BENCHMARKS.md
    best = bench_precision.main(["--steps", "3", "--rounds", "1", "--data", str(mnist_dir)])
    assert set(best) == {"fp32", "bf16"}
    assert all(rate > 0 and 0 <= acc <= 1 for rate, acc in best.values())
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "<!-- bench_precision_" in text and "`precision: auto` trains in" in text


def test_a_failed_measurement_is_recorded_and_the_run_goes_on(tmp_path):
    import gpu

    def broken(*_):
        raise RuntimeError("capture failed")

    row = gpu.safely(broken, model="wrn-28-10", precision="bf16", variant="channels_last+cuda_graph")
    assert row["error"] == "RuntimeError: capture failed" and row["variant"].endswith("graph")
    report = gpu.Report(tmp_path, {"device": "x", "torch": "y"})
    report.add("wrn", [row])
    assert "failed: RuntimeError: capture failed" in (tmp_path / "gpu.md").read_text()
    assert json.loads((tmp_path / "gpu.json").read_text())["wrn"] == [row]
