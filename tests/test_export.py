"""A trained model as a user gets it: `lsqueeze.load_model(dir)` (checked, eval, NCHW, [0, 1]
inputs) and `lsqueeze export` (a plain fp32 state_dict, its sha256 and a model card whose numbers
are the measurements')."""

import gzip
import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import lsqueeze
from conftest import MNIST_COPY, REPO, tiny_spec
from lsqueeze.cli import main
from lsqueeze.jobs import cost, data
from lsqueeze.jobs import export as E
from lsqueeze.jobs.train import train
from lsqueeze.runtime.files import file_digest, save_parquet
from lsqueeze.runtime.integrity import IntegrityError
from lsqueeze.science import inputs
from lsqueeze.science.models import build_model

REPRODUCED = REPO / "reproduced" / "mnist_100k_cpu"
REAL_CELL = REPRODUCED / "models" / "ls0-sq2-gn0.5-k100k-s0-clip"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, digits, one_thread):
    """A tiny digits28 cell trained by the package (model.pt, metrics.json, their digests)."""
    out = tmp_path_factory.mktemp("cell")
    train(tiny_spec(steps=40), digits, out, progress=False)
    return out


@pytest.fixture(scope="module")
def batch(digits):
    x, y = inputs.test_subset(digits, 64, "cpu")
    return x, y


def _copy(src, tmp_path):
    dest = tmp_path / "cell"
    shutil.copytree(src, dest)
    return dest


def _one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text
    return text


# --- load_model ----------------------------------------------------------------------------------

def test_load_model_equals_the_pipelines_model(tiny, batch):
    x, _ = batch
    model = lsqueeze.load_model(tiny)
    metrics = json.loads((tiny / "metrics.json").read_text())
    theirs = inputs.load_model(metrics["spec"], tiny / "model.pt", tuple(x.shape[1:]))
    assert not model.training
    assert all(p.is_contiguous() for p in model.parameters())  # NCHW, not channels_last
    with torch.no_grad():
        torch.testing.assert_close(model(x), theirs(x), rtol=1e-5, atol=1e-5)
    # the path of model.pt itself is understood too
    with torch.no_grad():
        torch.testing.assert_close(lsqueeze.load_model(tiny / "model.pt")(x), model(x))


def test_import_lsqueeze_stays_light():
    code = ("import sys, lsqueeze; "
            "print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_tampered_model_is_refused_naming_the_file(tiny, tmp_path):
    cell = _copy(tiny, tmp_path)
    blob = bytearray((cell / "model.pt").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (cell / "model.pt").write_bytes(bytes(blob))
    with pytest.raises(IntegrityError) as exc:
        lsqueeze.load_model(cell)
    line = _one_line(exc)
    assert str(cell / "model.pt") in line and "sha256" in line
    (cell / "model.pt").unlink()
    with pytest.raises(IntegrityError) as exc:
        lsqueeze.load_model(cell)
    assert str(cell / "model.pt") in _one_line(exc) and "no such file" in str(exc.value)


def test_model_without_its_metrics_or_of_another_cell_is_refused(tiny, tmp_path):
    cell = _copy(tiny, tmp_path)
    metrics = json.loads((cell / "metrics.json").read_text())
    (cell / "metrics.json").unlink()
    (cell / "metrics.json.sha256").unlink(missing_ok=True)
    with pytest.raises(IntegrityError) as exc:
        lsqueeze.load_model(cell)
    assert str(cell / "model.pt") in _one_line(exc) and "metrics.json" in str(exc.value)
    metrics["id"] = "digits28/ls0-sq0-gn0-k1-s9"  # vouches for another cell than its spec
    (cell / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(IntegrityError) as exc:
        lsqueeze.load_model(cell)
    assert str(cell / "model.pt") in _one_line(exc)


def test_export_refuses_a_tampered_model_in_one_line(tiny, tmp_path, capsys):
    cell = _copy(tiny, tmp_path)
    (cell / "model.pt").write_bytes((cell / "model.pt").read_bytes()[:-10])
    out = tmp_path / "out"
    assert main(["export", str(cell), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lsqueeze export: error: ")
    assert str(cell / "model.pt") in err[0]
    assert not out.exists() or not list(out.iterdir())


def test_real_mnist_model_loads_and_classifies(tmp_path):
    """The committed MNIST model (no .sha256 beside its model.pt: metrics.json vouches for it)."""
    if not REAL_CELL.exists():
        pytest.skip("no committed MNIST model")
    if not MNIST_COPY.exists():
        pytest.skip(f"no local MNIST copy at {MNIST_COPY} (set LSQUEEZE_MNIST_MIRROR)")
    model = lsqueeze.load_model(REAL_CELL)
    with gzip.open(MNIST_COPY / "t10k-images-idx3-ubyte.gz") as fh:
        images = np.frombuffer(fh.read(), np.uint8, offset=16)[: 500 * 784]
    with gzip.open(MNIST_COPY / "t10k-labels-idx1-ubyte.gz") as fh:
        labels = np.frombuffer(fh.read(), np.uint8, offset=8)[:500]
    x = torch.from_numpy(images.copy()).view(500, 1, 28, 28).float() / 255
    with torch.no_grad():
        acc = (model(x).argmax(1) == torch.from_numpy(labels.astype(np.int64))).float().mean()
    metrics = json.loads((REAL_CELL / "metrics.json").read_text())
    assert acc > 0.95 and abs(float(acc) - metrics["test_accuracy"]) < 0.03


def test_shapes_are_the_datasets():
    assert set(E.IMAGE_SHAPE) == set(data.DATASETS) == set(E.TEST_SIZE)
    assert E.IMAGE_SHAPE == cost.IMAGE_SHAPE and E.TEST_SIZE == cost.TEST_SIZE


# --- export --------------------------------------------------------------------------------------

def _measurements(metrics, path, clean=None):
    """A long-form Parquet as the aggregation writes it: the cell's training row, AutoAttack and
    the worst case at ε 0.1, a PGD row alone at ε 0.2, and another cell's rows."""
    cid, other = metrics["spec"]["id"], "digits28/ls0-sq0-gn0-k1-s0"
    base = {"cell_id": cid, "attack_steps": None, "loss": None, "worst_of": None,
            "config_hash": None}
    rows = [
        {**base, "threat": "none", "attack_id": None, "attack": None, "eps": None,
         "metric": "test_accuracy", "value": metrics["test_accuracy"] if clean is None else clean,
         "unit": "fraction", "n": None, "config_hash": E.config_hash(metrics["spec"])},
        {**base, "threat": "white", "attack_id": "aa-standard-e0.1", "attack": "autoattack",
         "eps": 0.1, "metric": "accuracy", "value": 0.41, "unit": "fraction", "n": 100},
        {**base, "threat": "white", "attack_id": "pgd-xent-n40-e0.1-a0.01-r1-rand",
         "attack": "pgd", "loss": "xent", "eps": 0.1, "metric": "accuracy", "value": 0.55,
         "unit": "fraction", "n": 100},
        {**base, "threat": "worst", "attack_id": "worst-e0.1", "attack": "worst_case", "eps": 0.1,
         "metric": "accuracy", "value": 0.39, "unit": "fraction", "n": 100,
         "worst_of": "aa-standard-e0.1, pgd-xent-n40-e0.1-a0.01-r1-rand"},
        {**base, "threat": "white", "attack_id": "pgd-xent-n40-e0.2-a0.01-r1-rand",
         "attack": "pgd", "loss": "xent", "eps": 0.2, "metric": "accuracy", "value": 0.2,
         "unit": "fraction", "n": 50},
        {**base, "cell_id": other, "threat": "white", "attack_id": "aa-standard-e0.1",
         "attack": "autoattack", "eps": 0.1, "metric": "accuracy", "value": 0.9,
         "unit": "fraction", "n": 100},
    ]
    frame = pd.DataFrame(rows).astype({"n": "Int64", "eps": "float64"})
    save_parquet(frame, path)
    return frame


def test_export_writes_a_checkpoint_a_fresh_model_loads(tiny, batch, tmp_path, capsys):
    x, _ = batch
    out = tmp_path / "out"
    assert main(["export", str(tiny), "--out", str(out)]) == 0
    metrics = json.loads((tiny / "metrics.json").read_text())
    name = metrics["spec"]["id"].replace("/", "_")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{name}{ext}" for ext in (".pt", ".sha256", ".md", ".json"))
    ckpt = out / f"{name}.pt"
    assert (out / f"{name}.sha256").read_text() == f"{file_digest(ckpt)}  {ckpt.name}\n"
    state = torch.load(ckpt, weights_only=True)
    assert type(state) is dict and all(v.dtype == torch.float32 and v.is_contiguous()
                                       for v in state.values() if v.is_floating_point())
    card = json.loads((out / f"{name}.json").read_text())
    fresh = build_model(card["recipe"], card["input"]["shape"])
    fresh.load_state_dict(state)  # strict: every key, every shape
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), lsqueeze.load_model(tiny)(x))
    assert card["checkpoint"]["sha256"] == file_digest(ckpt)
    assert card["model_sha256"] == metrics["model_sha256"]
    assert card["clean_accuracy"]["value"] == metrics["test_accuracy"]
    assert card["clean_accuracy"]["n"] == E.TEST_SIZE["digits28"]
    assert card["robust_accuracy"] == "not measured"
    assert card["training"]["sigma"] == metrics["spec"]["cell"]["sigma"]
    assert card["threat_model"]["norm"] == "Linf" and card["code_version"]
    md = (out / f"{name}.md").read_text()
    assert "not measured" in md and file_digest(ckpt) in md and card["code_version"] in md
    lock = "sha256:" + file_digest(REPO / "requirements.lock")
    assert card["environment_lock"] == lock and f"requirements.lock `{lock}`" in md
    # a second export is byte-identical: the digest names the weights, not the run
    E.export(tiny, tmp_path / "again")
    assert file_digest(tmp_path / "again" / ckpt.name) == file_digest(ckpt)


def test_card_numbers_are_the_parquets(tiny, tmp_path):
    metrics = json.loads((tiny / "metrics.json").read_text())
    parquet = tmp_path / "measurements.parquet"
    _measurements(metrics, parquet)
    paths = E.export(tiny, tmp_path / "out", parquet)
    card = json.loads(paths["json"].read_text())
    scale = metrics["spec"]["recipe"]["pixel_scale"]
    rows = {r["eps"]: r for r in card["robust_accuracy"]}
    assert sorted(rows) == [0.1, 0.2]
    assert rows[0.1]["eps_pixel"] == 0.1 / scale
    assert rows[0.1]["autoattack"] == {"value": 0.41, "n": 100, "attack_id": "aa-standard-e0.1"}
    assert rows[0.1]["worst_case"]["value"] == 0.39 and rows[0.1]["worst_case"]["n"] == 100
    assert len(rows[0.1]["worst_case"]["worst_of"]) == 2
    assert rows[0.2]["autoattack"] == "not measured" and rows[0.2]["worst_case"] == "not measured"
    assert card["measurements"]["source_sha256"] == file_digest(parquet)
    md = paths["card"].read_text()
    assert "41.00% (n = 100)" in md and "39.00% (n = 100; over 2 attacks)" in md
    line = next(s for s in md.splitlines() if s.startswith("| 0.2 |"))
    assert line.count("not measured") == 2 and "0.00%" not in md


def test_a_parquet_of_another_training_is_refused(tiny, tmp_path):
    metrics = json.loads((tiny / "metrics.json").read_text())
    parquet = tmp_path / "measurements.parquet"
    _measurements(metrics, parquet, clean=metrics["test_accuracy"] / 2)
    with pytest.raises(E.ExportError) as exc:
        E.export(tiny, tmp_path / "out", parquet)
    assert str(parquet) in _one_line(exc) and "another training" in str(exc.value)
    assert not (tmp_path / "out").exists()


def test_real_mnist_card_matches_the_reproduced_measurements(tmp_path):
    if not REAL_CELL.exists():
        pytest.skip("no committed MNIST model")
    parquet = REPRODUCED / "measurements.parquet"
    paths = E.export(REAL_CELL, tmp_path, parquet)
    assert paths["checkpoint"].name == "mnist_ls0-sq2-gn0.5-k100k-s0-clip.pt"
    card = json.loads(paths["json"].read_text())
    frame = pd.read_parquet(parquet)
    cell = frame[frame["cell_id"] == "mnist/ls0-sq2-gn0.5-k100k-s0-clip"]
    (row,) = card["robust_accuracy"]
    aa = cell[cell["attack"] == "autoattack"].iloc[0]
    worst = cell[cell["threat"] == "worst"].iloc[0]
    assert row["eps"] == aa["eps"] == worst["eps"] == 0.3
    assert (row["autoattack"]["value"], row["autoattack"]["n"]) == (aa["value"], aa["n"])
    assert (row["worst_case"]["value"], row["worst_case"]["n"]) == (worst["value"], worst["n"])
    clean = cell[cell["metric"] == "test_accuracy"].iloc[0]
    assert card["clean_accuracy"]["value"] == clean["value"]
    assert card["training"]["method"] == "logit squeezing + noise"
    assert (card["training"]["alpha"], card["training"]["beta"], card["training"]["sigma"]) == (
        0.0, 2.0, 0.5)
