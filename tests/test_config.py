import copy
import re

import pytest
import yaml

from conftest import PRESETS, REPO
from lsqueeze.plan.build import attack_id, build_plan, cell_id, num, resolve_cell, steps_tag
from lsqueeze.plan.schema import ConfigError, validate


def test_numbers_have_one_spelling():
    assert num(0.5) == num("0.50") == num(5e-1) == "0.5"
    assert num(2.0) == "2" and num(0) == "0" and num(0.95) == "0.95"
    assert steps_tag(400000) == "400k" and steps_tag(2_000_000) == "2M" and steps_tag(300) == "300"


def test_cell_ids_are_canonical():
    a = resolve_cell({}, {"dataset": "mnist", "alpha": 0.2, "sigma": 0.50, "steps": 400000})
    b = resolve_cell({}, {"dataset": "mnist", "alpha": "0.20", "sigma": 0.5, "steps": 400000, "seed": 0})
    assert cell_id(a) == cell_id(b) == "mnist/ls0.2-sq0-gn0.5-k400k-s0"
    nat = resolve_cell({}, {"dataset": "mnist", "method": "natural", "steps": 100000})
    assert cell_id(nat) == "mnist/ls0-sq0-gn0-k100k-s0"
    adv = resolve_cell({}, {"dataset": "mnist", "method": "adv", "steps": 100000})
    assert cell_id(adv) == "mnist/at40-e0.3-a0.01-rand-k100k-s0"


def test_shared_cells_are_planned_once():
    cfg = yaml.safe_load((REPO / "tests/config/tiny.yaml").read_text())
    cfg["tables"][0]["rows"].append({"cell": {"dataset": "digits28", "method": "natural", "steps": 60}})
    plan = build_plan(cfg)
    assert len(plan.cells) == 4  # natural, smooth, and squeeze with its two seeds


def test_row_seeds_are_one_cell_each():
    cfg = yaml.safe_load((REPO / "tests/config/tiny.yaml").read_text())
    plan = build_plan(cfg)
    row = plan.tables[1]["rows"][0]
    assert row["cell_ids"] == ["digits28/ls0-sq0.5-gn0.5-k60-s0", "digits28/ls0-sq0.5-gn0.5-k60-s1"]
    assert row["cell_id"] == row["cell_ids"][0]
    assert {c for c, _ in plan.white} >= set(row["cell_ids"])   # every seed is attacked
    assert {t for t, _, _ in plan.black} >= set(row["cell_ids"])
    cfg["tables"][1]["rows"][0]["seeds"] = [0, 0]
    with pytest.raises(ConfigError, match="seeds"):
        validate(cfg)


@pytest.mark.parametrize("a, b, words", [
    # beyond the 6 significant digits an id keeps
    ({"beta": 0.1234561}, {"beta": 0.1234564}, ["cell", "ls0-sq0.123456", "beta: 0.1234561 vs 0.1234564"]),
    # a setting the adversarial-training id leaves out
    ({"method": "adv", "alpha": 0.1}, {"method": "adv"}, ["cell", "at40", "alpha: 0.1 vs 0.0"]),
])
def test_two_cells_with_one_id_are_refused(a, b, words):
    cfg = yaml.safe_load((REPO / "tests/config/tiny.yaml").read_text())
    rows = cfg["tables"][0]["rows"]
    rows += [{"cell": {"dataset": "digits28", "steps": 60, **c}} for c in (a, b)]
    with pytest.raises(ValueError) as info:
        build_plan(cfg)
    assert "share the id" in str(info.value) and all(w in str(info.value) for w in words), info.value
    with pytest.raises(ConfigError, match="share the id"):
        validate(cfg)


@pytest.fixture
def demo():
    return yaml.safe_load((REPO / "params/demo.yaml").read_text())


@pytest.mark.parametrize("mutate,key", [
    (lambda c: c.update(bogus=1), "bogus"),
    (lambda c: c["cells"]["smooth"].update(sigma=-0.1), "cells.smooth.sigma"),
    (lambda c: c["cells"]["smooth"].update(alpha=1.5), "cells.smooth.alpha"),
    (lambda c: c["cells"]["smooth"].update(dataset="imagenet"), "cells.smooth.dataset"),
    (lambda c: c["cells"]["smooth"].update(sigmaa=0.3), "sigmaa"),
    (lambda c: c.setdefault("train", {}).update(precision="fp16"), "train.precision"),
])
def test_bad_preset_names_the_key(demo, mutate, key):
    bad = copy.deepcopy(demo)
    mutate(bad)
    with pytest.raises(ConfigError) as err:
        validate(bad)
    assert key in str(err.value)


def test_unknown_dataset_lists_allowed(demo):
    demo["cells"]["smooth"]["dataset"] = "imagenet"
    with pytest.raises(ConfigError, match="mnist"):
        validate(demo)


def test_presets_validate():
    assert len(PRESETS) >= 14  # paper, demo, mnist_cpu, table1..11
    for path in PRESETS + [REPO / "tests/config/tiny.yaml"]:
        validate(yaml.safe_load(path.read_text()))


def test_environment_yml_installs_the_lock():
    """conda's environment is the lock, as `make venv`'s is (test_lock: the lock covers
    pyproject's dependencies at allowed versions)."""
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip == ["-r requirements.lock"] and (REPO / "requirements.lock").is_file()
    assert "python=3.11" in env["dependencies"]


def test_attack_ids_of_a_new_kind_name_each_changed_setting():
    """A new attack kind needs no id format of its own (README, Extending)."""
    assert attack_id({"attack": "square", "eps": 0.3, "queries": 5000}) == "square-eps0.3-queries5000"
    # eps null (unbounded) is the default: the same attack as no eps, the same id
    assert attack_id({"attack": "square", "eps": None, "random_start": True}) == \
        "square-randomstarttrue"
    assert attack_id({"attack": "pgd", "loss": "cw", "steps": 40, "eps": 0.3, "step_size": 0.01,
                        "random_start": True}) == "pgd-cw-n40-e0.3-a0.01-r1-rand"


def test_only_tables_plans_one_table_of_a_preset_and_nothing_else():
    """`--config only_tables=[2]` on the paper preset: Table 2's cells and attacks (the models
    the table2 preset trains, at the same store addresses), no CIFAR source, no figures."""
    import yaml

    from lsqueeze.plan.build import build_plan

    paper = yaml.safe_load((REPO / "params/paper.yaml").read_text())
    part = build_plan({**paper, "only_tables": [2]})
    table2 = build_plan(yaml.safe_load((REPO / "params/table2.yaml").read_text()))
    assert [t["id"] for t in part.tables] == ["2"] and part.figures == []
    assert {part.store_dir(c) for c in part.cells} == {table2.store_dir(c) for c in table2.cells}
    assert part.white == table2.white and part.black == table2.black
    with pytest.raises(ValueError, match="only_tables: no table 12 in this preset"):
        build_plan({**paper, "only_tables": ["2", 12]})


def test_a_models_store_address_changes_with_its_recipe_and_precision_only():
    """The recipe key: an edited recipe or precision policy gives that dataset's cells a new
    address (they retrain; the old models stay for the presets that still name them); run options
    and the other datasets' recipes leave it as it is."""
    import yaml

    from lsqueeze.plan.build import build_plan

    base = yaml.safe_load((REPO / "params/paper.yaml").read_text())

    def key(cfg, ds):
        return build_plan(cfg).recipe_key(ds)

    train = base.get("train", {})
    lr = {**base, "recipes": {"mnist": {"lr": 0.5}}}
    assert key(lr, "mnist") != key(base, "mnist") and key(lr, "cifar10") == key(base, "cifar10")
    bf16 = {**base, "train": {**train, "precision": "bf16"}}
    assert key(bf16, "mnist") != key(base, "mnist")
    ckpt = {**base, "train": {**train, "checkpoint_every": 7}}
    assert key(ckpt, "mnist") == key(base, "mnist")
    cid = next(iter(build_plan(base).cells))
    assert re.fullmatch(r"[a-z0-9]+/r[0-9a-f]{8}/[A-Za-z0-9.+\-]+", build_plan(base).store_dir(cid))
