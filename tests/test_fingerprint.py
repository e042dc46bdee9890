"""Code fingerprints: what makes Snakemake rerun a job after a change to the package."""

import shutil
from pathlib import Path

import pytest

import lsqueeze
from lsqueeze.fingerprint import fingerprint, modules

PACKAGE = Path(lsqueeze.__file__).parent


@pytest.fixture
def pkg(tmp_path):
    root = tmp_path / "lsqueeze"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def edit(path: Path, old: str, new: str):
    text = path.read_text()
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1))


def fp(module, root):
    fingerprint.cache_clear()
    return fingerprint(module, root)


def test_stages_cover_the_modules_that_compute_them():
    assert set(modules("train")) >= {"train", "models", "data", "attacks"}
    assert set(modules("evaluate")) >= {"evaluate", "attacks", "models"}
    assert "analysis" not in modules("evaluate")  # an ε_L fix must not re-run every attack
    assert not set(modules("tables")) & {"io", "cli", "gpu"}


def test_comments_docstrings_and_formatting_do_not_count(pkg):
    before = fp("train", pkg)
    train = pkg / "train.py"
    edit(train, '"""y_warm = y_hot', '"""Reworded. y_warm = y_hot')
    edit(train, "    hot = F.one_hot(", "    # a new comment\n    hot = F.one_hot(  \n")
    assert fp("train", pkg) == before


def test_code_edits_count_in_the_module_and_what_it_imports(pkg):
    before = {m: fp(m, pkg) for m in ("train", "evaluate", "figures")}
    edit(pkg / "attacks.py", "confidence: float = 50.0):", "confidence: float = 40.0):")
    after = {m: fp(m, pkg) for m in before}
    assert after["train"] != before["train"] and after["evaluate"] != before["evaluate"]
    edit(pkg / "io.py", "def ", "def _unused():\n    return 1\n\n\ndef ")  # plumbing: no rerun
    assert fp("train", pkg) == after["train"]
    with pytest.raises(ValueError, match="no module"):
        fp("nonexistent", pkg)
