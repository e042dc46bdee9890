"""The benchmark scripts run (tiny sizes, CPU): a lent GPU's minutes and a long CPU run are never
spent finding a bug in them. Speed itself is measured by the scripts, never asserted here."""

import json
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


def test_gpu_script_runs_on_cpu_smoke(tmp_path, one_thread):
    import gpu

    res = gpu.main(["--smoke", "--out", str(tmp_path / "gpu.json")])
    assert json.loads((tmp_path / "gpu.json").read_text()) == res
    for variant in ("eager", "channels_last"):
        r = res["wrn"][variant]
        assert r["images_per_s"] > 0 and r["flops_per_step"] > 0
    assert res["cnn"]["steps_per_s"] > 0
    assert set(res["pgd20_wrn"]) == {"eval_fp32", "train_adversary_bf16"}
    hours = res["projected_hours"]
    assert len(hours) >= 11 and all(h > 0 for h in hours.values())


def test_flop_count_of_a_training_step_is_about_three_forwards(one_thread):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import gpu
    from lsqueeze.config import RECIPES
    from lsqueeze.models import build_model

    recipe = RECIPES["mnist"]
    model = build_model(recipe, (1, 28, 28))
    x, y = torch.rand(50, 1, 28, 28), torch.randint(0, 10, (50,))
    with FlopCounterMode(display=False) as fwd:
        model(x)
    step = gpu.train_flops(model, recipe, x, y)
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
