"""Fault trials on a finished run's files: a split edited on disk, a record copied to another
cell's path. Each ends with nothing lost and either the right result or a one-line error naming
the file (the companion of test_reliability.py, which tries single jobs)."""

import hashlib
import re
import shutil

import pytest
import torch
import yaml

from conftest import run_snakemake
from lsqueeze.plan.build import build_plan
from lsqueeze.plan.layout import Layout
from lsqueeze.runtime.files import save_torch
from lsqueeze.runtime.integrity import IntegrityError, install_splits


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def flip_byte(path, at=0.5):
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def layout(tiny_config):
    return Layout(build_plan(yaml.safe_load(tiny_config.read_text())))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_config, layout):
    """The tiny preset's models only (data + train), trained once through Snakemake."""
    work = tmp_path_factory.mktemp("trained")
    run_snakemake(work, f"--configfile={tiny_config}", *[layout.model(c) for c in layout.plan.cells])
    return work


def test_an_edited_split_deletes_no_model_and_is_rebuilt(trained, tiny_config, layout, tmp_path):
    work = tmp_path / "run"
    shutil.copytree(trained, work, symlinks=True)  # .snakemake's records and the times with it
    targets = [layout.model(c) for c in layout.plan.cells]
    models = [work / t for t in targets]
    before = {m: sha(m) for m in models}
    test_set = work / layout.split_dir("digits28") / "test.pt"
    original = sha(test_set)
    flip_byte(test_set)
    # The default profile keeps going: every job Snakemake would rerun loses its outputs first.
    # One evaluation (never run yet) reads the split and must refuse it in one line.
    evaluation = layout.white("digits28/ls0-sq0-gn0-k60-s0", "fgsm-xent-e0.3")
    preset = f"--configfile={tiny_config}"  # one file: the targets follow it
    run = run_snakemake(work, preset, "--keep-going", *targets, evaluation, check=False)
    assert run.returncode != 0 and not (work / evaluation).exists()
    assert {m: sha(m) for m in models if m.exists()} == before  # every model still on disk
    log = next((work / "results/store/logs/white").rglob("fgsm-xent-e0.3.log")).read_text()
    (error,) = [line for line in log.splitlines() if "error" in line]
    assert error.startswith("lsqueeze evaluate: error: results/data/digits28/test.pt: its content")
    repair = re.search(r"`(snakemake [^`]+)`", error).group(1)
    assert repair.endswith("--force results/data/digits28/test.pt"), repair
    # the command the error gives rebuilds the split as it was, and reruns nothing else
    args = repair.replace("--configfile <preset>", "").split()[1:]
    rebuilt = run_snakemake(work, preset, *args)
    assert "1 of 1 steps" in rebuilt.stderr + rebuilt.stdout
    assert sha(test_set) == original
    dry = run_snakemake(work, preset, "-n", *targets)
    assert "Nothing to be done" in dry.stdout + dry.stderr
    assert {m: sha(m) for m in models} == before


def test_a_rebuilt_split_that_differs_is_refused(tmp_path):
    """The other side of reading splits as `ancient`: a rebuild that would change the split under
    the models made from it is refused, and the recorded split stays."""
    out, stage = tmp_path / "digits28", tmp_path / "stage"
    for split, n in (("train", 8), ("test", 4)):
        save_torch({"x": torch.zeros(n, 1, 2, 2, dtype=torch.uint8), "y": torch.zeros(n)},
                   out / f"{split}.pt")
    kept = sha(out / "test.pt")
    save_torch({"x": torch.zeros(8, 1, 2, 2, dtype=torch.uint8), "y": torch.zeros(8)},
               stage / "train.pt")
    save_torch({"x": torch.ones(4, 1, 2, 2, dtype=torch.uint8), "y": torch.zeros(4)},
               stage / "test.pt")
    staged = {"train": stage / "train.pt", "test": stage / "test.pt"}
    with pytest.raises(IntegrityError, match=r"test\.pt: the rebuilt split differs .* delete "):
        install_splits(staged, out)
    assert sha(out / "test.pt") == kept and (stage / "train.pt").exists()  # nothing moved
    # the same split rebuilt goes into place, its recorded digest untouched
    save_torch({"x": torch.zeros(4, 1, 2, 2, dtype=torch.uint8), "y": torch.zeros(4)},
               stage / "test.pt")
    side = out / "test.pt.sha256"
    mtime = side.stat().st_mtime_ns
    install_splits(staged, out)
    assert sha(out / "test.pt") == kept and side.stat().st_mtime_ns == mtime
