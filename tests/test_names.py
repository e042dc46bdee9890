"""One name per model: the display name (the first table row's label, else the paper's words,
made distinct across seeds), and the preset's cell name, beside the cell id in the long form;
the summary figure prints the same name."""

import json

import pandas as pd

from conftest import REPO
from lsqueeze.report import names as N

SEEDS = [f"mnist/ls0-sq2-gn0.5-k20k-s{s}" for s in range(3)]


def _cell(**over):
    return {"dataset": "mnist", "method": "regularized", "alpha": 0.0, "beta": 2.0, "sigma": 0.5,
            "steps": 20000, "seed": 0, "clip_noise": False, **over}


def _plan():
    cells = {cid: _cell(seed=s) for s, cid in enumerate(SEEDS)}
    cells["mnist/ls0-sq0-gn0-k20k-s0"] = _cell(beta=0.0, sigma=0.0)
    cells["mnist/ls0-sq0-gn0-k10k-s0"] = _cell(beta=0.0, sigma=0.0, steps=10000)  # a source only
    return {"cells": cells, "tables": [
        {"id": "6", "rows": [{"cell": "squeeze", "cell_id": SEEDS[0], "label": "LSQ β=2, σ=0.5"},
                             {"cell": "natural", "cell_id": "mnist/ls0-sq0-gn0-k20k-s0"}]},
        {"id": "2", "rows": [{"cell": "squeeze", "cell_id": SEEDS[0], "cell_ids": SEEDS,
                              "label": "another label"}]}]}


def test_display_names_are_the_first_rows_label_and_distinct():
    names = N.display_names(_plan())
    # the first row that shows a training names all its seeds; the seed tells them apart
    assert [names[c] for c in SEEDS] == [f"LSQ β=2, σ=0.5 (seed {s})" for s in range(3)]
    assert names["mnist/ls0-sq0-gn0-k20k-s0"] == "natural (k=20k)"
    assert names["mnist/ls0-sq0-gn0-k10k-s0"] == "natural (k=10k)"  # no row: the paper's words
    assert len(set(names.values())) == len(names)
    assert N.cell_names(_plan()) == {SEEDS[0]: "squeeze", SEEDS[1]: "squeeze",
                                     SEEDS[2]: "squeeze", "mnist/ls0-sq0-gn0-k20k-s0": "natural"}


def test_the_long_form_carries_both_names_beside_the_cell_id():
    long = pd.DataFrame({"dataset": "mnist", "cell_id": [SEEDS[1], "mnist/ls0-sq0-gn0-k10k-s0"],
                         "metric": "test_accuracy", "value": [0.99, 0.98]})
    out = N.with_names(long, _plan())
    assert list(out.columns) == ["dataset", "cell_id", "model", "cell_name", "metric", "value"]
    assert out["model"].tolist() == ["LSQ β=2, σ=0.5 (seed 1)", "natural (k=10k)"]
    assert out["cell_name"].tolist() == ["squeeze", None]
    assert N.with_names(out, _plan()).equals(out)  # named twice: the same columns, once


def test_kept_run_names_are_one_per_cell():
    plan = json.loads((REPO / "reproduced" / "mnist_cpu" / "plan.json").read_text())
    names = N.display_names(plan)
    assert set(names) == set(plan["cells"]) and len(set(names.values())) == len(names)


def test_summary_prints_the_measurements_display_name():
    from lsqueeze.report.summary import summary_records

    long = pd.DataFrame({"dataset": "mnist", "method": "regularized", "alpha": 0.0, "beta": 2.0,
                         "sigma": 0.5, "steps": 20000, "seed": [0, 1], "clip_noise": False,
                         "cell_id": SEEDS[:2], "threat": "none", "attack_id": None,
                         "metric": "test_accuracy", "value": [0.99, 0.98], "n": None})
    named = N.with_names(long, _plan())
    assert {r["model"] for r in summary_records(named)} == {
        "LSQ β=2, σ=0.5 (seed 0)", "LSQ β=2, σ=0.5 (seed 1)"}
    # older measurements, without the column: the paper's words, told apart
    assert {r["model"] for r in summary_records(long)} == {
        "logit squeezing + noise (seed 0)", "logit squeezing + noise (seed 1)"}
