"""The README's Extending section, proved: a toy attack kind, a toy regularizer and a toy dataset,
each added in the one registry the README names (monkeypatched here), reach validation, the
plan, the cost projection, the masking checks and the job that runs them, and plan only the jobs
they should."""

import shutil

import pytest
import torch

from conftest import REPO, SMALL_ARCH, tiny_spec
from lsqueeze.jobs import cost
from lsqueeze.plan import build as config
from lsqueeze.plan.schema import ConfigError, validate
from lsqueeze.registries import attack_kinds, datasets, regularizers
from lsqueeze.science import attacks
from lsqueeze.science.splits import load_split

TINY = REPO / "tests" / "config" / "tiny.yaml"


def tiny() -> dict:
    return config.load_config(TINY)


# -- an attack kind ------------------------------------------------------------------------------

def randsign(model, x, y, spec, seed=0, index=None, batched_restarts=False):
    """A toy gradient-free attack: `queries` random vertices of the ε-box, the first that fools
    the model kept per image."""
    gen = torch.Generator().manual_seed(int(seed))
    best, robust = x.clone(), attacks.predict(model, x) == y
    for _ in range(int(spec["queries"])):
        signs = torch.randint(0, 2, x.shape, generator=gen).to(x) * 2 - 1
        cand = (x + spec["eps"] * signs).clamp(0, 1)
        fooled = robust & (attacks.predict(model, cand) != y)
        best[fooled], robust = cand[fooled], robust & ~fooled
    return best, robust


RANDOM_SIGN = attack_kinds.AttackKind(
    "randsign", "test_extending:randsign",
    fixed={"loss": None, "steps": None, "step_size": None, "random_start": False, "restarts": 1},
    settings={"queries": (10, {"type": "integer", "minimum": 1})},
    image_steps=lambda a: a["queries"] / 3,  # forwards only
    budget=lambda a: 1.0)


@pytest.fixture
def random_sign_kind(monkeypatch):
    monkeypatch.setitem(attack_kinds.ATTACK_KINDS, "randsign", RANDOM_SIGN)


def with_random_sign(preset: dict, **settings) -> dict:
    """tiny.yaml with one more column on the `strong` table: the toy attack at ε 0.3."""
    preset = {**preset, "attacks": {**preset["attacks"],
                                    "rs": {"attack": "randsign", "eps": 0.3, **settings}}}
    tables = [dict(t) for t in preset["tables"]]
    strong = next(t for t in tables if t["id"] == "strong")
    strong["columns"] = [*strong["columns"], {"name": "random sign", "threat": "white",
                                              "attack": "rs"}]
    return {**preset, "tables": tables}


def test_a_new_attack_kind_is_one_registry_entry(random_sign_kind):
    preset = with_random_sign(tiny(), queries=7)
    validate(preset)  # the schema's enum and the kind's own setting come from the registry
    with pytest.raises(ConfigError, match="queries"):
        validate(with_random_sign(tiny(), queries=0))
    with pytest.raises(ConfigError, match="queries is a setting of another kind"):
        validate({**preset, "attacks": {**preset["attacks"], "aa": {
            "attack": "autoattack", "eps": 0.3, "queries": 3}}})

    before, after = config.build_plan(tiny()), config.build_plan(preset)
    (aid,) = set(after.attacks) - set(before.attacks)
    assert aid == "randsign-eps0.3-queries7"  # the generic id: each setting it sets
    assert after.attacks[aid] == {**attack_kinds.BASE, **RANDOM_SIGN.fixed, "attack": "randsign",
                                  "eps": 0.3, "queries": 7}
    # only the new white-box evaluation of the table's row: no training, no other job
    assert after.cells == before.cells and after.black == before.black
    (squeeze,) = {c for c, a in after.white if a == aid}
    assert after.white - before.white == {(squeeze, aid)}

    est = cost.job_costs(after, cost.StepTimes.load("h100"))
    pgd5 = next(a for a in after.attacks if a.startswith("pgd-xent-n5-"))
    ratio = est.attack[("white", squeeze, aid)] / est.attack[("white", squeeze, pgd5)]
    assert ratio == pytest.approx((7 / 3) / 5)  # its own image-steps against PGD-5's
    assert attack_kinds.budget({"attack": "randsign", "attack_steps": None}) == 1.0


def test_a_new_attack_kind_runs_within_eps_and_the_box(random_sign_kind):
    from lsqueeze.science.models import build_model

    torch.manual_seed(0)
    model = build_model({**config.RECIPES["digits28"], "arch": SMALL_ARCH}, (1, 28, 28)).eval()
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    plan = config.build_plan(with_random_sign(tiny(), queries=5))
    pixel = plan.attack_spec("randsign-eps0.3-queries5", "digits28")  # [0,1] units
    x_adv, robust = attacks.attack(model, x, y, pixel, seed=3)
    assert (x_adv - x).abs().max() <= 0.3 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert torch.equal(robust, attacks.predict(model, x_adv) == y)
    assert robust.sum() <= (attacks.predict(model, x) == y).sum()


def test_a_new_attack_kinds_module_is_in_the_evaluations_fingerprint(tmp_path):
    """The registry names the runner as text; an edit to that module re-evaluates, and does not
    touch the tables (which read the registry's entry, never its runner)."""
    from lsqueeze.runtime import fingerprint as F

    pkg = tmp_path / "lsqueeze"
    shutil.copytree(F.PACKAGE, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "science" / "toy_attack.py").write_text("def run(model, x, y, spec, **kw):\n    return x, y\n")
    kinds = pkg / "registries" / "attack_kinds.py"
    kinds.write_text(kinds.read_text().replace(
        "ATTACK_KINDS: dict[str, AttackKind] = {k.name: k for k in (",
        'ATTACK_KINDS: dict[str, AttackKind] = {k.name: k for k in (\n'
        '    AttackKind("toy", "lsqueeze.science.toy_attack:run"),'))

    def fps():
        F.fingerprint.cache_clear()
        return {m: F.fingerprint(m, pkg) for m in ("jobs.evaluate", "report.tables", "jobs.train")}

    before = fps()
    (pkg / "science" / "toy_attack.py").write_text(
        "def run(model, x, y, spec, **kw):\n    return x + 0, y\n")
    after = fps()
    assert after["jobs.evaluate"] != before["jobs.evaluate"]
    assert after["report.tables"] == before["report.tables"]
    assert after["jobs.train"] == before["jobs.train"]
    F.fingerprint.cache_clear()


# -- a dataset -----------------------------------------------------------------------------------

def toy_split(name, raw, mirror):
    """A toy dataset's converter: 12×12 grey images of 4 classes, a bright square per class."""
    g = torch.Generator().manual_seed(0)

    def part(n):
        y = torch.arange(n) % 4
        x = torch.randint(0, 60, (n, 1, 12, 12), generator=g, dtype=torch.uint8)
        for k in range(4):
            x[y == k, :, 3 * k:3 * k + 3, 3 * k:3 * k + 3] = 255
        return {"x": x, "y": y}

    return {"train": part(96), "test": part(16)}


TOY = datasets.Dataset(
    "toy", {**datasets.RECIPES["digits28"], "num_classes": 4, "batch_size": 16,
            "arch": {"name": "madry_cnn", "conv1": 4, "conv2": 8, "fc": 16}},
    (1, 12, 12), 16, "test_extending:toy_split")


def with_toy_row(preset: dict) -> dict:
    """tiny.yaml with a toy-dataset row in table 2 (trained 30 steps)."""
    preset = {**preset, "cells": {**preset["cells"],
                                  "toy": {"dataset": "toy", "sigma": 0.3, "steps": 30}}}
    tables = [dict(t) for t in preset["tables"]]
    two = next(t for t in tables if t["id"] == "2")
    two["rows"] = [*two["rows"], {"cell": "toy"}]
    two["columns"] = [c for c in two["columns"] if c.get("threat") != "black"]
    return {**preset, "tables": tables}


def test_a_new_dataset_is_one_registry_entry(monkeypatch, tmp_path):
    from lsqueeze.jobs import data, evaluate, train

    with pytest.raises(ConfigError, match="toy"):
        validate(with_toy_row(tiny()))
    monkeypatch.setitem(datasets.DATASETS, "toy", TOY)
    preset = with_toy_row(tiny())
    validate(preset)  # the schema's dataset enum is the registry's names

    base = config.build_plan({**preset, "cells": tiny()["cells"], "tables": [
        {**t, "rows": [r for r in t["rows"] if r["cell"] != "toy"]} for t in preset["tables"]]})
    plan = config.build_plan(preset)
    (cid,) = set(plan.cells) - set(base.cells)
    assert cid.startswith("toy/") and plan.recipe("toy") == TOY.recipe
    white = next(a for c, a in plan.white if c == cid)
    assert plan.white - base.white == {(cid, white)} and plan.black == base.black

    est = cost.job_costs(plan, cost.StepTimes.load("h100"))  # the registry's shape and test size
    per_image = est.attack[("white", cid, white)] / attack_kinds.image_steps(plan.attacks[white])
    assert per_image == pytest.approx(16 * cost.StepTimes.load("h100").rate(
        "attack", TOY.recipe, TOY.image_shape, "fp32").seconds)

    paths = data.prepare("toy", tmp_path / "data")  # the registry's converter
    x, y = load_split(paths["test"])
    assert x.shape == (16, 1, 12, 12) and x.dtype == torch.uint8
    spec = plan.train_spec(cid)
    metrics = train.train(spec, tmp_path / "data", tmp_path / "model", progress=False,
                          options={"device": "cpu"})
    assert metrics["steps_done"] == 30 and not metrics["diverged"]
    rec = evaluate.white_box(spec, tmp_path / "model" / "model.pt", tmp_path / "data",
                             config.attack_record(plan, white, "toy"), tmp_path / "white.json",
                             device="cpu")
    assert rec["n"] == 16 and 0 <= rec["accuracy"] <= metrics["test_accuracy"]


# -- a regularizer -------------------------------------------------------------------------------

def logit_l1(z):
    """A toy loss regularizer: the summed absolute logits."""
    return z.abs().sum()


GAMMA = regularizers.Regularizer("gamma", "l1", "logit l1", "loss", "test_extending:logit_l1")


def with_gamma_row(preset: dict, gamma: float) -> dict:
    """tiny.yaml with a row in table 2 whose cell is `squeeze` with gamma set."""
    preset = {**preset, "cells": {**preset["cells"],
                                  "l1": {**preset["cells"]["squeeze"], "gamma": gamma}}}
    tables = [dict(t) for t in preset["tables"]]
    two = next(t for t in tables if t["id"] == "2")
    two["rows"] = [*two["rows"], {"cell": "l1"}]
    return {**preset, "tables": tables}


def test_a_new_regularizer_is_one_registry_entry(monkeypatch):
    from lsqueeze.science.step import regularized_loss

    with pytest.raises(ConfigError, match="gamma"):
        validate(with_gamma_row(tiny(), 0.5))
    monkeypatch.setitem(regularizers.REGULARIZERS, "gamma", GAMMA)
    validate(with_gamma_row(tiny(), 0.5))  # the preset key and its schema come from the entry
    with pytest.raises(ConfigError, match="gamma"):
        validate(with_gamma_row(tiny(), -1))

    before, plan = config.build_plan(tiny()), config.build_plan(with_gamma_row(tiny(), 0.5))
    (cid,) = set(plan.cells) - set(before.cells)
    squeeze = config.cell_id(config.resolve_cell(tiny(), "squeeze"))
    assert cid == squeeze.replace("-gn0.5-", "-gn0.5-l10.5-")  # in the id only where it is set
    assert set(before.cells) <= set(plan.cells)  # every other cell keeps its id (and model)
    assert config.model_name(plan.cells[cid]) == "logit squeezing + noise + logit l1"
    assert {c for c, _ in plan.white - before.white} == {cid}
    assert {t for t, _, _ in plan.black - before.black} == {cid}

    # what the training step adds: gamma × the term, on top of the built-in loss
    z, y = torch.randn(4, 10), torch.tensor([0, 1, 2, 3])
    cell = plan.cells[cid]
    without = regularized_loss(z, y, {**cell, "gamma": 0.0})
    assert torch.isclose(regularized_loss(z, y, cell), without + 0.5 * z.abs().sum())


def test_a_new_regularizer_trains_into_its_own_model(monkeypatch, tmp_path):
    from lsqueeze.jobs import train
    from lsqueeze.jobs.data import prepare

    monkeypatch.setitem(regularizers.REGULARIZERS, "gamma", GAMMA)
    prepare("digits28", tmp_path / "data")
    spec = tiny_spec(steps=40)
    runs = {}
    for gamma in (0.0, 0.05):
        cell = config.resolve_cell({}, {**spec["cell"], "gamma": gamma})
        runs[gamma] = train.train({**spec, "id": config.cell_id(cell), "cell": cell},
                                  tmp_path / "data", tmp_path / f"g{gamma}", progress=False,
                                  options={"device": "cpu"})
    assert runs[0.0]["id"] == spec["id"] and runs[0.05]["id"] != spec["id"]
    # the term squeezes the logits the trained model gives
    assert runs[0.05]["mean_logit_norm"] < runs[0.0]["mean_logit_norm"]
