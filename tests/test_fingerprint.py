"""Code fingerprints: what makes Snakemake rerun a job after a change to the package."""

import shutil
from pathlib import Path

import pytest

import lsqueeze
from lsqueeze.runtime.fingerprint import fingerprint, modules

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
    train, evaluate = set(modules("jobs.train")), set(modules("jobs.evaluate"))
    assert train >= {"jobs.train", "science.step", "science.pgd", "runtime.devices",
                     "science.models", "science.splits", "science.cuda_graph"}
    # evaluation-only attacks (FGSM, restarts, AutoAttack, the dispatcher) never retrain a model
    assert not train & {"science.attacks", "science.autoattack", "jobs.evaluate", "science.inputs",
                        "plan.build"}
    # nor a downloader or a recipe (a recipe is part of the model's store address)
    assert not train & {"jobs.data", "registries.datasets"}
    assert evaluate >= {"jobs.evaluate", "science.attacks", "science.autoattack", "science.pgd",
                        "runtime.devices", "science.models", "science.inputs"}
    # a training edit (loss, augmentation, the CUDA-graph step) re-evaluates only retrained models
    assert not evaluate & {"jobs.train", "science.step", "science.cuda_graph", "jobs.analysis"}
    assert not set(modules("jobs.analysis")) & {"jobs.train", "science.step", "jobs.evaluate",
                                                "science.attacks", "science.pgd"}
    torch_modules = {"runtime.files", "cli", "runtime.pinning", "science.models", "jobs.data",
                     "science.pgd", "science.attacks", "runtime.devices", "jobs.analysis"}
    assert not set(modules("report.tables")) & torch_modules
    assert not set(modules("report.figures")) & (torch_modules | {"report.tables"})
    assert not set(modules("report.summary")) & (torch_modules | {"report.tables"})


def test_each_edit_reruns_the_stages_that_use_it(pkg):
    stages = ("jobs.train", "jobs.evaluate", "jobs.analysis", "report.tables", "report.figures",
              "report.summary")
    before = {m: fp(m, pkg) for m in stages}

    def changed(path, old, new):
        edit(pkg / path, old, new)
        after = {m: fp(m, pkg) for m in stages}
        diff = {m.split(".")[1] for m in stages if after[m] != before[m]}
        before.update(after)
        return diff

    assert changed("science/autoattack.py", "x, y = x.detach().clone()",
                   "x, y = x.detach().clone() + 0") == {"evaluate"}
    assert changed("science/attacks.py", "x_adv = fgsm(model, x, y,",
                   "x_adv = 1 * fgsm(model, x, y,") == {"evaluate"}
    assert changed("science/step.py", 'return torch.linalg.matrix_norm(z, ord="fro")',
                   'return 1.0 * torch.linalg.matrix_norm(z, ord="fro")') == {"train"}
    assert changed("science/pgd.py", "def project(x_adv, x, eps):",
                   "def project(x_adv, x, eps, unused=0):") == {"train", "evaluate"}
    assert changed("runtime/devices.py", "model.eval()", "model.train(False)") \
        == {"train", "evaluate", "analysis"}
    assert changed("science/landscape.py", "def ", "def _unused():\n    return 1\n\n\ndef ") \
        == {"analysis"}
    assert changed("report/tables.py", "def ", "def _unused():\n    return 1\n\n\ndef ") \
        == {"tables"}
    # a regularizer's entry: its id part and words are read by the tables and the summary
    # figure, its term by training
    assert changed("registries/regularizers.py", 'column="β", in_id=True)',
                   'column="β", in_id=True, default=0)') == {"train", "tables", "summary"}
    # an attack kind's entry: its id, cost or budget are read by the tables, its runner by evaluate
    assert changed("registries/attack_kinds.py", "budget=lambda a: math.inf,",
                   "budget=lambda a: 1e9,") == {"evaluate", "tables", "summary"}
    assert changed("report/summary.py", "def ", "def _unused():\n    return 1\n\n\ndef ") \
        == {"summary"}
    # `python -m lsqueeze.science.models` code: no job runs it
    assert changed("science/models.py", "recipe = ds.recipe", "recipe = dict(ds.recipe)") == set()


def test_comments_docstrings_and_formatting_do_not_count(pkg):
    before = fp("jobs.train", pkg)
    step = pkg / "science" / "step.py"
    edit(step, '"""y_warm = y_hot', '"""Reworded. y_warm = y_hot')
    edit(step, "    hot = F.one_hot(", "    # a new comment\n    hot = F.one_hot(  \n")
    assert fp("jobs.train", pkg) == before


def test_code_edits_count_in_the_module_and_what_it_imports(pkg):
    before = {m: fp(m, pkg) for m in ("jobs.train", "jobs.evaluate", "report.figures")}
    edit(pkg / "science" / "pgd.py", "confidence: float = 50.0):", "confidence: float = 40.0):")
    after = {m: fp(m, pkg) for m in before}
    assert after["jobs.train"] != before["jobs.train"]
    assert after["jobs.evaluate"] != before["jobs.evaluate"]
    # plumbing: no rerun
    edit(pkg / "runtime" / "files.py", "def ", "def _unused():\n    return 1\n\n\ndef ")
    assert fp("jobs.train", pkg) == after["jobs.train"]
    with pytest.raises(ValueError, match="no module"):
        fp("nonexistent", pkg)
