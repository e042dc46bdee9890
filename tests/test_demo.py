"""The offline demo preset shows the paper's ordering: what it measures, and that it is there.

The full demo runs minutes; these tests check its preset and train two of its cells at reduced
steps (README "What the demo shows" gives the full run's numbers).
"""

import pytest
import torch

from conftest import REPO
from lsqueeze.jobs.data import prepare
from lsqueeze.jobs.evaluate import white_box
from lsqueeze.jobs.train import train
from lsqueeze.plan.build import build_plan, cell_defaults, load_config, resolve_attack
from lsqueeze.plan.schema import validate

DEMO = REPO / "params" / "demo.yaml"


@pytest.fixture(scope="module")
def plan():
    return build_plan(validate(load_config(DEMO)))


def _cid(plan, name):
    """The canonical id of the preset's cell `name` (the one cell of the plan with its values)."""
    cfg = load_config(DEMO)["cells"][name]
    if cfg.get("method") == "adv":
        want = resolve_attack(load_config(DEMO), cfg["adv"])
        match = [cid for cid, c in plan.cells.items()
                 if c["method"] == "adv" and c["adv"]["steps"] == want["steps"]]
    else:
        want = {**cell_defaults(), **cfg}
        match = [cid for cid, c in plan.cells.items() if c["method"] != "adv"
                 and all(c[k] == want[k] for k in ("alpha", "beta", "sigma", "steps", "seed"))]
    assert len(match) == 1, (name, match)
    return match[0]


def test_demo_attacks_at_its_training_eps(plan):
    """Every bounded evaluation attack uses the ε the adversarial training used, the ε the
    titles name; and the models train thousands of steps (a few hundred leave every model at ~0%
    under PGD)."""
    train_eps = {c["adv"]["eps"] for c in plan.cells.values() if c["method"] == "adv"}
    assert train_eps == {0.1}
    bounded = [a for a in plan.attacks.values() if a.get("eps") is not None]  # Table 9: unbounded
    assert len(bounded) >= 8 and {a["eps"] for a in bounded} == train_eps
    for table in plan.tables:
        if any(col.get("threat", "none") != "none" for col in table["columns"]) and table["id"] != "9":
            assert "ε = 0.1" in table["title"], table["title"]
        assert "ε = 0.3" not in table["title"].replace("(the paper: ε = 0.3)", "")
    for fig in plan.figures:
        if fig["kind"] == "linear":
            assert fig["eps"] == 0.1
    assert min(c["steps"] for c in plan.cells.values()) >= 2000


def test_demo_ordering_table_lists_the_papers_comparison(plan):
    """One table holds natural, both regularizers with noise and adversarial training under
    white-box PGD-40 X-ent, so tables.md shows the ordering in one place."""
    table = next(t for t in plan.tables if t["id"] == "ordering")
    cells = [r["cell_id"] for r in table["rows"]]
    for name in ("natural", "squeeze", "smooth", "madry", "smooth_clean", "squeeze_clean"):
        assert _cid(plan, name) in cells
    (col,) = [c for c in table["columns"] if c.get("threat") == "white"]
    attack = plan.attacks[col["attack_id"]]
    assert (attack["attack"], attack["loss"], attack["steps"], attack["random_start"]) == \
        ("pgd", "xent", 40, True)


def test_demo_squeeze_with_noise_beats_natural_under_pgd(plan, tmp_path):
    """The demo's natural and logit-squeezing + noise cells at half their steps: white-box
    PGD-40 (ε = 0.1, the preset's attack) leaves the natural model near 0 and the squeezed one
    clearly above it (the full demo: ~4% vs ~44%)."""
    torch.set_num_threads(1)
    data = tmp_path / "data"
    prepare("digits28", data, raw_dir=tmp_path / "raw")
    table = next(t for t in plan.tables if t["id"] == "ordering")
    col = next(c for c in table["columns"] if c.get("threat") == "white")
    acc = {}
    for name in ("natural", "squeeze"):
        spec = plan.train_spec(_cid(plan, name))
        spec["cell"] = {**spec["cell"], "steps": 1000}
        train(spec, data, tmp_path / name, progress=False, log_every=None,
              options={"checkpoint_every": 10_000}, device_policy="cpu")
        attack = {"id": col["attack_id"], "paper": plan.attacks[col["attack_id"]],
                  "pixel": plan.attack_spec(col["attack_id"], "digits28")}
        rec = white_box(spec, tmp_path / name / "model.pt", data, attack, tmp_path / f"{name}.json",
                        device="cpu")
        acc[name] = rec["accuracy"]
    assert acc["natural"] <= 0.15, acc
    assert acc["squeeze"] >= acc["natural"] + 0.15, acc
