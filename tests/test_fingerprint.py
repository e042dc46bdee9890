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
    train, evaluate = set(modules("train")), set(modules("evaluate"))
    assert train >= {"train", "step", "pgd", "device", "models", "splits", "fast"}
    # evaluation-only attacks (FGSM, restarts, AutoAttack, the dispatcher) never retrain a model
    assert not train & {"attacks", "autoattack", "evaluate", "inputs", "config"}
    # nor a downloader or a recipe (a recipe is part of the model's store address)
    assert not train & {"data", "datasets"}
    assert evaluate >= {"evaluate", "attacks", "autoattack", "pgd", "device", "models", "inputs"}
    # a training edit (loss, augmentation, the CUDA-graph step) re-evaluates only retrained models
    assert not evaluate & {"train", "step", "fast", "analysis"}
    assert not set(modules("analysis")) & {"train", "step", "evaluate", "attacks", "pgd"}
    torch_modules = {"io", "cli", "gpu", "models", "data", "pgd", "attacks", "device", "analysis"}
    assert not set(modules("tables")) & torch_modules
    assert not set(modules("figures")) & (torch_modules | {"tables"})


def test_each_edit_reruns_the_stages_that_use_it(pkg):
    stages = ("train", "evaluate", "analysis", "tables", "figures")
    before = {m: fp(m, pkg) for m in stages}

    def changed(path, old, new):
        edit(pkg / path, old, new)
        after = {m: fp(m, pkg) for m in stages}
        diff = {m for m in stages if after[m] != before[m]}
        before.update(after)
        return diff

    assert changed("autoattack.py", "x, y = x.detach().clone()",
                   "x, y = x.detach().clone() + 0") == {"evaluate"}
    assert changed("attacks.py", "x_adv = fgsm(model, x, y,", "x_adv = 1 * fgsm(model, x, y,") \
        == {"evaluate"}
    assert changed("step.py", 'return torch.linalg.matrix_norm(z, ord="fro")',
                   'return 1.0 * torch.linalg.matrix_norm(z, ord="fro")') == {"train"}
    assert changed("pgd.py", "def project(x_adv, x, eps):", "def project(x_adv, x, eps, unused=0):") \
        == {"train", "evaluate"}
    assert changed("device.py", "model.eval()", "model.train(False)") == {"train", "evaluate", "analysis"}
    assert changed("landscape.py", "def ", "def _unused():\n    return 1\n\n\ndef ") == {"analysis"}
    assert changed("tables.py", "def ", "def _unused():\n    return 1\n\n\ndef ") == {"tables"}
    # `python -m lsqueeze.models` code: no job runs it
    # an attack kind's entry: its id, cost or budget are read by the tables, its runner by evaluate
    # a regularizer's entry: its id part and words are read by the tables, its term by training
    assert changed("regularizers.py", 'column="β", in_id=True)', 'column="β", in_id=True, default=0)') \
        == {"train", "tables", "figures"}
    assert changed("attack_kinds.py", "budget=lambda a: math.inf)", "budget=lambda a: 1e9)") \
        == {"evaluate", "tables", "figures"}
    assert changed("models.py", "recipe = ds.recipe", "recipe = dict(ds.recipe)") == set()


def test_comments_docstrings_and_formatting_do_not_count(pkg):
    before = fp("train", pkg)
    step = pkg / "step.py"
    edit(step, '"""y_warm = y_hot', '"""Reworded. y_warm = y_hot')
    edit(step, "    hot = F.one_hot(", "    # a new comment\n    hot = F.one_hot(  \n")
    assert fp("train", pkg) == before


def test_code_edits_count_in_the_module_and_what_it_imports(pkg):
    before = {m: fp(m, pkg) for m in ("train", "evaluate", "figures")}
    edit(pkg / "pgd.py", "confidence: float = 50.0):", "confidence: float = 40.0):")
    after = {m: fp(m, pkg) for m in before}
    assert after["train"] != before["train"] and after["evaluate"] != before["evaluate"]
    edit(pkg / "io.py", "def ", "def _unused():\n    return 1\n\n\ndef ")  # plumbing: no rerun
    assert fp("train", pkg) == after["train"]
    with pytest.raises(ValueError, match="no module"):
        fp("nonexistent", pkg)
