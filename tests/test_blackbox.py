"""Black-box threat model: a set crafted once on a source model, reused by every target."""

import json
import re

import pytest
import torch
import torch.nn.functional as F

from conftest import run_snakemake
from lsqueeze.jobs import evaluate
from lsqueeze.jobs.data import prepare
from lsqueeze.plan.build import RECIPES, attack_id, build_plan, load_config, resolve_attack
from lsqueeze.runtime.files import load_torch, save_json, save_torch
from lsqueeze.runtime.integrity import model_record
from lsqueeze.science.attacks import predict
from lsqueeze.science.inputs import load_model
from lsqueeze.science.models import build_model
from lsqueeze.science.splits import to_float

RECIPE = {**RECIPES["digits28"], "arch": {"name": "madry_cnn", "conv1": 4, "conv2": 8, "fc": 16}}


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    yield


def spec_of(name, seed):
    return {"id": f"digits28/{name}", "recipe": RECIPE, "train": {},
            "cell": {"dataset": "digits28", "method": "regularized", "alpha": 0.0, "beta": 0.0,
                     "sigma": 0.0, "steps": 80, "seed": seed, "clip_noise": False}}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """digits28 split files and three small models trained from different seeds."""
    root = tmp_path_factory.mktemp("bb")
    prepare("digits28", root / "data")
    train = load_torch(root / "data" / "train.pt")
    x, y = to_float(train["x"]), train["y"]
    models = {}
    for seed, name in enumerate(("source", "target_a", "target_b")):
        torch.manual_seed(seed)
        model = build_model(RECIPE, (1, 28, 28))
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(80):
            idx = torch.randint(0, len(y), (64,), generator=gen)
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        path = root / name / "model.pt"  # beside the metrics.json that readers check it against
        save_torch(model.state_dict(), path)
        save_json(model_record(path, f"digits28/{name}"), path.with_name("metrics.json"))
        models[name] = (spec_of(name, seed), path)
    return root, models


def test_craft_once_transfer_to_two_targets(world):
    root, models = world
    paper = resolve_attack({}, {"attack": "pgd", "loss": "cw", "steps": 7, "eps": 0.3,
                                "step_size": 0.1, "random_start": True})
    attack = {"id": attack_id(paper), "paper": paper, "pixel": paper}
    adv = root / "adv" / f"{attack['id']}.pt"
    n = 120
    spec, path = models["source"]
    evaluate.craft(spec, path, root / "data", attack, adv, n=n, batch_size=50)
    stat, digest = adv.stat().st_mtime_ns, evaluate.file_hash(adv)

    blob = load_torch(adv)
    x = to_float(load_torch(root / "data" / "test.pt")["x"][:n])
    assert blob["source_id"] == spec["id"] and blob["attack_id"] == attack["id"]
    assert blob["source_hash"] == evaluate.file_hash(path)
    assert (blob["x_adv"] - x).abs().max() <= 0.3 + 1e-6
    assert blob["x_adv"].min() >= 0 and blob["x_adv"].max() <= 1
    assert len(blob["y"]) == n

    records = {}
    for name in ("target_a", "target_b"):
        tspec, tpath = models[name]
        rec = evaluate.transfer(tspec, tpath, adv, root / "eval" / f"{name}.json", attack=attack,
                                source_metrics=path.with_name("metrics.json"))
        records[name] = rec
        # the stored set was only read: same bytes, same mtime
        assert adv.stat().st_mtime_ns == stat and evaluate.file_hash(adv) == digest
        assert rec["adv_set_hash"] == digest and rec["source_hash"] == blob["source_hash"]
        assert rec["kind"] == "black" and rec["n"] == n and rec["source_id"] == spec["id"]
        assert json.loads((root / "eval" / f"{name}.json").read_text())["correct"] == rec["correct"]
        model = load_model(tspec, tpath, tuple(blob["x_adv"].shape[1:]), "cpu")
        assert rec["correct"] == int((predict(model, blob["x_adv"]) == blob["y"]).sum())
    # The set fools its own source more than it fools the other models (it was crafted there).
    assert blob["source_accuracy"] < min(r["accuracy"] for r in records.values())
    assert records["target_a"]["model_hash"] != records["target_b"]["model_hash"]


def test_dag_crafts_each_source_attack_once(tmp_path, tiny_config):
    """Two targets read one crafted set: the dry run schedules one craft job per (source, attack)."""
    plan = build_plan(load_config(tiny_config))
    targets = {t for t, _, _ in plan.black}
    assert len(targets) >= 2 and len(plan.crafted) < len(plan.black)
    proc = run_snakemake(tmp_path, "--dry-run", configfile=tiny_config)
    out = proc.stdout + proc.stderr
    counts = dict(re.findall(r"^(craft|evaluate_black)\s+(\d+)\s*$", out, flags=re.M))
    assert int(counts["craft"]) == len(plan.crafted)
    assert int(counts["evaluate_black"]) == len(plan.black)


def test_autoattack_white_box_column(world):
    """The optional AutoAttack column runs through the white-box command like any attack."""
    pytest.importorskip("torchattacks")
    root, models = world
    paper = resolve_attack({}, {"attack": "autoattack", "eps": 0.3})
    attack = {"id": attack_id(paper), "paper": paper, "pixel": paper}
    assert attack["id"] == "aa-standard-e0.3"
    spec, path = models["target_a"]
    rec = evaluate.white_box(spec, path, root / "data", attack, root / "aa.json", n=16)
    pgd = resolve_attack({}, {"attack": "pgd", "eps": 0.3, "steps": 10, "step_size": 0.05,
                              "random_start": True})
    ref = evaluate.white_box(spec, path, root / "data", {"id": attack_id(pgd), "paper": pgd,
                                                         "pixel": pgd}, root / "pgd.json", n=16)
    assert rec["kind"] == "white" and rec["n"] == 16 and rec["attack"]["id"] == "aa-standard-e0.3"
    assert rec["correct"] <= ref["correct"]
