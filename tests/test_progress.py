"""Signs of life: a job whose output goes to a log file writes progress lines there."""

import re

import pytest

from lsqueeze.jobs import evaluate
from lsqueeze.jobs.analysis import run_analyze
from lsqueeze.jobs.data import prepare
from lsqueeze.jobs.train import train
from lsqueeze.plan import build as C
from lsqueeze.plan.build import attack_id, resolve_attack
from lsqueeze.runtime.progress import Ticker

RECIPE = {**C.RECIPES["digits28"], "arch": {"name": "madry_cnn", "conv1": 4, "conv2": 8, "fc": 16}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("progress")
    prepare("digits28", root / "data")
    cell = C.resolve_cell({}, {"dataset": "digits28", "alpha": 0.1, "steps": 12})
    spec = {"id": C.cell_id(cell), "cell": cell, "recipe": RECIPE, "train": {}}
    return root, spec


def test_train_without_bar_logs_step_rate_loss_eta(trained, capfd):
    root, spec = trained
    train(spec, root / "data", root / "model", progress=False, log_every=0)
    err = capfd.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith(spec["id"])]
    assert len(lines) == 12, err  # interval 0: one line per step
    assert re.fullmatch(rf"{re.escape(spec['id'])}: step 12/12 \(100%\), \d+ images/s, "
                        r"loss [-\d.e+]+, ETA 0m00s", lines[-1]), lines[-1]
    assert "step 1/12" in lines[0]


def test_train_logs_nothing_extra_with_the_bar_or_a_long_interval(trained, capfd):
    root, spec = trained
    train(spec, root / "data", root / "quiet", progress=False, log_every=3600)
    assert "step 12/12 (100%)" in capfd.readouterr().err  # the last step always says so
    train(spec, root / "data", root / "quiet2", progress=False, log_every=None)
    assert "images/s" not in capfd.readouterr().err


def test_evaluate_craft_and_analyze_log_every_batch(trained, capfd):
    root, spec = trained
    paper = resolve_attack({}, {"attack": "pgd", "loss": "xent", "steps": 3, "eps": 0.3,
                                "step_size": 0.1, "random_start": True})
    attack = {"id": attack_id(paper), "paper": paper, "pixel": paper}
    model = root / "model" / "model.pt"
    evaluate.white_box(spec, model, root / "data", attack, root / "e.json", n=40, batch_size=10)
    err = capfd.readouterr().err
    batches = re.findall(r"batch (\d)/4 .*robust (\d+)/(\d+)", err)
    assert [b[0] for b in batches] == ["1", "2", "3", "4"], err
    assert [int(b[2]) for b in batches] == [10, 20, 30, 40]
    evaluate.craft(spec, model, root / "data", attack, root / "c.pt", n=40, batch_size=20)
    assert re.search(r"^craft .*batch 2/2 ", capfd.readouterr().err, re.M)
    run_analyze(spec, model, root / "data", root / "a.parquet", n=300)
    assert re.search(r"batch 2/2 ", capfd.readouterr().err)  # 256 images per batch


def test_ticker_interval_and_eta():
    import io

    out = io.StringIO()
    t = Ticker("job", total=10, every=3600, stream=out)
    t.tick(5, 50, loss=0.5)
    assert out.getvalue() == ""
    t.log(5, 50, loss=0.5)
    line = out.getvalue().strip()
    assert line.startswith("job: step 5/10 (50%), ") and "loss 0.5, ETA" in line
    assert not Ticker("x", 1, every=None).due() and Ticker("x", 1, every=0).due()
