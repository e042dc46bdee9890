"""A trained model as a user gets it: `lsqueeze.load_model(dir)` (checked, eval, NCHW, [0, 1]
inputs) and `lsqueeze export` (a plain fp32 state_dict, its sha256 and a model card whose numbers
are the measurements')."""

import gzip
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import lsqueeze
from conftest import MNIST_COPY, REPO, tiny_spec
from lsqueeze import export as E
from lsqueeze.cli import main
from lsqueeze.jobs import cost, data
from lsqueeze.jobs.train import train
from lsqueeze.runtime.files import file_digest, lock_digest, save_parquet
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


def _zoo(out, metrics):
    """Where export puts a model's files: RobustBench's <dataset>/<threat>/<name>."""
    cell = metrics["spec"]
    return out / cell["cell"]["dataset"] / "Linf", cell["id"].replace("/", "_")


def test_export_writes_a_checkpoint_a_fresh_model_loads(tiny, batch, tmp_path, capsys):
    x, _ = batch
    out = tmp_path / "out"
    assert main(["export", str(tiny), "--out", str(out)]) == 0
    metrics = json.loads((tiny / "metrics.json").read_text())
    where, name = _zoo(out, metrics)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == sorted(
        f"digits28/Linf/{name}{ext}" for ext in (".pt", ".pt2", ".sha256", ".md", ".json"))
    ckpt, prog = where / f"{name}.pt", where / f"{name}.pt2"
    assert (where / f"{name}.sha256").read_text() == (
        f"{file_digest(ckpt)}  {ckpt.name}\n{file_digest(prog)}  {prog.name}\n")
    state = torch.load(ckpt, weights_only=True)
    assert type(state) is dict and all(v.dtype == torch.float32 and v.is_contiguous()
                                       for v in state.values() if v.is_floating_point())
    card = json.loads((where / f"{name}.json").read_text())
    fresh = build_model(card["recipe"], card["input"]["shape"])
    fresh.load_state_dict(state)  # strict: every key, every shape
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), lsqueeze.load_model(tiny)(x))
    assert card["checkpoint"]["sha256"] == file_digest(ckpt)
    assert card["program"]["sha256"] == file_digest(prog)
    assert card["model_sha256"] == metrics["model_sha256"]
    assert card["training_commit"] == metrics["code_version"]
    assert card["clean_accuracy"]["value"] == metrics["test_accuracy"]
    assert card["clean_accuracy"]["n"] == E.TEST_SIZE["digits28"]
    assert card["robust_accuracy"] == card["autoattack_acc"] == "not measured"
    assert card["attacks"] == card["masking"] == "not measured"
    assert card["training"]["sigma"] == metrics["spec"]["cell"]["sigma"]
    assert card["threat_model"] == "Linf" and card["code_version"]
    md = (where / f"{name}.md").read_text()
    assert "not measured" in md and file_digest(ckpt) in md and card["code_version"] in md
    assert f'torch.export.load("{prog.name}").module()' in md
    lock = "sha256:" + file_digest(REPO / "requirements.lock")
    assert card["environment_lock"] == lock and f"requirements.lock `{lock}`" in md
    # a second export is byte-identical: the digests name the weights, not the run
    E.export(tiny, tmp_path / "again")
    again, _ = _zoo(tmp_path / "again", metrics)
    assert file_digest(again / ckpt.name) == file_digest(ckpt)
    assert file_digest(again / prog.name) == file_digest(prog)


# An interpreter that cannot import lsqueeze: isolated (-I: no PYTHONPATH, no user site), no
# site-packages of the virtual environment either (-S), torch found only through its own
# directory, put on sys.path by hand. The program must load and run there.
NO_LSQUEEZE = """
import sys
sys.path[:0] = {paths!r}
try:
    import lsqueeze
except ImportError:
    pass
else:
    raise SystemExit(f"lsqueeze is importable here: {{lsqueeze.__file__}}")
import torch
model = torch.export.load({program!r}).module()
x = torch.load({inputs!r}, weights_only=True)
x.requires_grad_(True)
logits = model(x)
logits.logsumexp(1).sum().backward()  # attacks need the input gradient
torch.save({{"logits": logits.detach(), "grad": x.grad, "one": model(x[:1]).detach()}}, {out!r})
"""


def _torch_only_path(tmp_path) -> str:
    """A directory holding only links to torch and its dependencies, no lsqueeze: what a user
    with plain PyTorch installed has on sys.path."""
    import importlib.util

    site = tmp_path / "site"
    site.mkdir()
    root = Path(torch.__file__).resolve().parents[1]
    for entry in root.iterdir():
        if "lsqueeze" not in entry.name.lower():  # an editable install's .pth or dist-info
            (site / entry.name).symlink_to(entry)
    assert importlib.util.find_spec("lsqueeze") is not None  # here it is importable
    return str(site)


def test_program_loads_without_lsqueeze_and_gives_its_logits(tiny, batch, tmp_path):
    x, _ = batch
    paths = E.export(tiny, tmp_path / "out")
    torch.save(x, tmp_path / "x.pt")
    script = NO_LSQUEEZE.format(paths=[_torch_only_path(tmp_path)], program=str(paths["program"]),
                                inputs=str(tmp_path / "x.pt"), out=str(tmp_path / "got.pt"))
    run = subprocess.run([sys.executable, "-I", "-S", "-c", script], capture_output=True,
                         text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    got = torch.load(tmp_path / "got.pt", weights_only=True)
    model = lsqueeze.load_model(tiny)
    xg = x.clone().requires_grad_(True)
    want = model(xg)
    want.logsumexp(1).sum().backward()
    torch.testing.assert_close(got["logits"], want.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["grad"], xg.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got["one"], want.detach()[:1], rtol=1e-5, atol=1e-5)


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
    assert "41.00% (n = 100)" in md and "39.00% (n = 100; over 2 evaluations)" in md
    line = next(s for s in md.splitlines() if s.startswith("| 0.2 |"))
    assert line.count("not measured") == 2 and not re.search(r"(?<![\d.])0\.00%", md)


def test_card_has_robustbenchs_fields_and_every_attack(tiny, tmp_path):
    metrics = json.loads((tiny / "metrics.json").read_text())
    parquet = tmp_path / "measurements.parquet"
    frame = _measurements(metrics, parquet)
    frame.insert(1, "model", "logit squeezing β=2 (tiny)")
    save_parquet(frame, parquet)
    card = json.loads(E.export(tiny, tmp_path / "out", parquet)["json"].read_text())
    assert list(card)[:11] == ["name", "dataset", "threat_model", "eps", "clean_acc",
                               "autoattack_acc", "architecture", "additional_data",
                               "number_forward_passes", "reference", "footnote"]
    scale = metrics["spec"]["recipe"]["pixel_scale"]
    assert card["name"] == "logit squeezing β=2 (tiny)"  # the measurements' display name
    assert card["dataset"] == "digits28" and card["threat_model"] == "Linf"
    # no paper ε for the digits: the ε AutoAttack ran at, spelled as RobustBench spells it
    assert card["eps"] == ("0.1" if scale == 1 else f"0.1/{scale:g}")
    assert card["clean_acc"] == f"{100 * metrics['test_accuracy']:.2f}"
    assert card["autoattack_acc"] == "41.00"
    assert card["architecture"].startswith("madry_cnn (") and card["additional_data"] is False
    assert card["number_forward_passes"] == 1 and "Shafahi" in card["reference"]
    assert "first 100 test images" in card["footnote"] and "39.00%" in card["footnote"]
    # the project's own: every attack, the worst case, the masking checks, the provenance
    assert [(a["threat"], a["attack_id"], a["value"]) for a in card["attacks"]] == [
        ("white", "aa-standard-e0.1", 0.41), ("white", "pgd-xent-n40-e0.1-a0.01-r1-rand", 0.55),
        ("white", "pgd-xent-n40-e0.2-a0.01-r1-rand", 0.2)]
    pgd = card["attacks"][1]
    assert (pgd["attack"], pgd["loss"], pgd["eps"], pgd["n"]) == ("pgd", "xent", 0.1, 100)
    assert card["worst_case"]["value"] == 0.39 and len(card["worst_case"]["worst_of"]) == 2
    checks = {m["check"]: m for m in card["masking"]}
    assert checks["autoattack_gap"]["flagged"] is True  # 41% vs PGD's 55%: 14 points
    assert checks["autoattack_gap"]["attack_id"] == "aa-standard-e0.1"
    assert "autoattack_gap" in card["footnote"]
    assert card["recipe"] == metrics["spec"]["recipe"]
    assert card["training_commit"] == metrics["code_version"]
    assert card["environment_lock"] == lock_digest()
    md = (tmp_path / "out" / "digits28" / "Linf" / f"{card['file']}.md").read_text()
    assert "| `autoattack_acc` | 41.00 |" in md and "pgd-xent-n40-e0.2-a0.01-r1-rand" in md


def test_measurements_without_the_model_are_refused_in_one_line(tiny, tmp_path, capsys):
    metrics = json.loads((tiny / "metrics.json").read_text())
    parquet = tmp_path / "measurements.parquet"
    frame = _measurements(metrics, parquet)
    save_parquet(frame[frame["cell_id"] != metrics["spec"]["id"]], parquet)
    out = tmp_path / "out"
    assert main(["export", str(tiny), "--out", str(out), "--measurements", str(parquet)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lsqueeze export: error: ")
    assert str(parquet) in err[0] and metrics["spec"]["id"] in err[0]
    assert "digits28/ls0-sq0-gn0-k1-s0" in err[0]  # what it holds instead
    assert not out.exists()
    # the cell's training row alone: exported, robust accuracy "not measured", one warning line
    save_parquet(frame[(frame["cell_id"] != metrics["spec"]["id"]) | (frame["threat"] == "none")],
                 parquet)
    assert main(["export", str(tiny), "--out", str(out), "--measurements", str(parquet)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lsqueeze export: warning: ")
    card = json.loads(next(out.rglob("*.json")).read_text())
    assert card["robust_accuracy"] == [] and card["autoattack_acc"] == "not measured"


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
