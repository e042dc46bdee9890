"""Agreement with the paper, on hand-made frames: distinct measurements (one measurement printed in
two tables counts once), uninformative pairs (a broken model near chance), the paper's replicate
spread, and the same counts in the DVC metrics."""

import json

import pandas as pd
import pytest

from lsqueeze.report.agreement import counts, headline, judge
from lsqueeze.report.dvc_metrics import summarize
from lsqueeze.report.render import render_markdown
from lsqueeze.report.tables import build_tables

PGD = {"attack": "pgd", "loss": "xent", "steps": 40, "eps": 0.3, "step_size": 0.01,
       "random_start": True, "restarts": 1}


def _cell(seed=0, beta=2.0, sigma=0.3):
    return {"dataset": "mnist", "method": "regularized", "alpha": 0.0, "beta": beta,
            "sigma": sigma, "steps": 1000, "seed": seed, "clip_noise": True}


CELLS = {"mnist/good": _cell(), "mnist/broken": _cell(beta=10.0),
         "mnist/rep-s0": _cell(sigma=0.5), "mnist/rep-s1": _cell(seed=1, sigma=0.5)}
COLUMNS = [{"name": "Test", "metric": "test_accuracy", "paper": {"metric": "test_accuracy"}},
           {"name": "white PGD", "threat": "white", "attack_id": "pgd-a", "attack_paper": PGD,
            "paper": {"attack": "pgd", "loss": "xent"}},
           {"name": "white PGD CW", "threat": "white", "attack_id": "pgd-b",
            "attack_paper": {**PGD, "loss": "cw"}, "paper": {"attack": "pgd", "loss": "cw"}}]


def _row(cid, paper_row):
    return {"cell": cid, "cell_id": cid, "paper_row": paper_row}


# Table 2 prints two of Table 6's rows again: the same measurements, printed twice. Table 6's
# rows 3 and 4 are the same parameters trained twice (seeds 0 and 1), like the paper's 2/14.
PLAN = {"cells": CELLS, "pixel_scale": {"mnist": 1.0}, "num_classes": {"mnist": 10},
        "tables": [{"id": "2", "paper_table": 2, "rows": [_row("mnist/good", 1), _row("mnist/broken", 2)],
                    "columns": COLUMNS},
                   {"id": "6", "paper_table": 6,
                    "rows": [_row("mnist/good", 1), _row("mnist/broken", 2), _row("mnist/rep-s0", 3),
                             _row("mnist/rep-s1", 4)], "columns": COLUMNS}]}
# published percent per (table, row): Test, PGD X-ent, PGD CW
PUBLISHED = {1: (99.0, 80.0, 70.0), 2: (12.9, 3.1, 40.0), 3: (99.1, 17.5, 11.2), 4: (99.2, 19.6, 11.8)}
# measured fractions per cell: test accuracy, PGD X-ent, PGD CW
MEASURED = {"mnist/good": (0.985, 0.79, 0.60), "mnist/broken": (0.11, 0.02, 0.03),
            "mnist/rep-s0": (0.99, 0.18, 0.115), "mnist/rep-s1": (0.99, 0.185, 0.12)}


def _reference():
    rows = []
    for table, paper_rows in (("2", (1, 2)), ("6", (1, 2, 3, 4))):
        for r in paper_rows:
            test, xent, cw = PUBLISHED[r]
            rows += [{"table": int(table), "row": r, "metric": "test_accuracy", "attack": "none",
                      "loss": None, "value_percent": test},
                     {"table": int(table), "row": r, "metric": "accuracy", "attack": "pgd",
                      "loss": "xent", "value_percent": xent},
                     {"table": int(table), "row": r, "metric": "accuracy", "attack": "pgd",
                      "loss": "cw", "value_percent": cw}]
    return pd.DataFrame(rows)


def _long():
    rows = []
    for cid, (test, xent, cw) in MEASURED.items():
        rows += [{"cell_id": cid, "metric": "test_accuracy", "threat": "none", "attack_id": None,
                  "value": test},
                 {"cell_id": cid, "metric": "accuracy", "threat": "white", "attack_id": "pgd-a",
                  "value": xent},
                 {"cell_id": cid, "metric": "accuracy", "threat": "white", "attack_id": "pgd-b",
                  "value": cw}]
    return pd.DataFrame(rows)


@pytest.fixture
def tables():
    return build_tables(PLAN, _long(), _reference(), {}, tolerance=2.0)


def test_status_per_comparison(tables):
    cmp = tables["6"][1].set_index(["cell_id", "column"])
    assert cmp.loc[("mnist/good", "white PGD"), "status"] == "within"       # 79 vs 80
    assert cmp.loc[("mnist/good", "white PGD CW"), "status"] == "outside"   # 60 vs 70
    # broken model (clean 11%, chance 10%): 2% vs 3.1% under attack says nothing
    assert cmp.loc[("mnist/broken", "white PGD"), "status"] == "uninformative"
    # ... but a published 40% it does not reach is a real disagreement
    assert cmp.loc[("mnist/broken", "white PGD CW"), "status"] == "outside"
    # and reproducing a collapse (clean 11% vs 12.9%) is a real agreement
    assert cmp.loc[("mnist/broken", "Test"), "status"] == "within"
    assert cmp.loc[("mnist/good", "white PGD"), "measurement"] == "mnist/good|white|pgd-a"


def test_replicate_spread_is_the_papers_own(tables):
    cmp = tables["6"][1].set_index(["cell_id", "column"])
    for cid in ("mnist/rep-s0", "mnist/rep-s1"):  # 17.5 vs 19.6 printed for the same parameters
        assert cmp.loc[(cid, "white PGD"), "replicate_spread_pct"] == pytest.approx(2.1)
        assert cmp.loc[(cid, "Test"), "replicate_spread_pct"] == pytest.approx(0.1)
    assert pd.isna(cmp.loc[("mnist/good", "white PGD"), "replicate_spread_pct"])  # printed once
    assert counts(tables["6"][1])["replicate_spread"] == pytest.approx(2.1)
    assert counts(tables["2"][1])["replicate_spread"] is None


def test_distinct_measurements_count_once(tables):
    s = counts(pd.concat([c for _, c in tables.values()], ignore_index=True))
    # 18 published numbers, all measured: Table 2's 6 repeat Table 6's first 6
    assert (s["published"], s["compared"], s["missing_measured"]) == (18, 18, 0)
    assert s["measurements"] == 12
    assert s["uninformative"] == 2 and s["measurements_uninformative"] == 1
    # within: good Test, good PGD, broken Test, rep-s0 Test/PGD/CW, rep-s1 Test/PGD/CW (12 - 3)
    assert s["measurements_within"] == 9
    assert s["within"] == 9 + 3  # comparisons: Table 2 repeats 3 of them
    text = headline(s, 2.0)
    assert text.startswith("9 of 11 distinct measurements within ±2 points")
    assert "differ by up to 2.10 points" in text and "1 uninformative" in text


def test_a_measurement_agrees_only_if_every_printing_does():
    cmp = pd.DataFrame({"measurement": ["m1", "m1", "m2", "m3", "m3"],
                        "status": ["within", "outside", "within", "uninformative", "within"],
                        "published_pct": [1.0] * 5, "measured_pct": [1.0] * 5,
                        "replicate_spread_pct": [None] * 5})
    s = counts(cmp)
    assert (s["measurements"], s["measurements_within"], s["measurements_uninformative"]) == (3, 2, 0)
    assert counts(None)["measurements"] == 0 and counts(cmp.iloc[:0])["compared"] == 0


def test_markdown_headline_counts_measurements(tables):
    md = render_markdown(PLAN, tables, 2.0)
    assert "9 of 11 distinct measurements within ±2 points" in md
    assert "uninformative (broken model)" in md  # Table 6's own line


def test_dvc_metrics_count_distinct_measurements(tmp_path, tables):
    plan = {**PLAN, "tolerance_pct": 2.0,
            "tables": [{**t, "rows": [{**r, "cell": r["cell_id"].split("/")[1]} for r in t["rows"]]}
                       for t in PLAN["tables"]]}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    for tid, (_, cmp) in tables.items():
        cmp.to_parquet(tmp_path / f"table_{tid}_compare.parquet")
    metrics, rows = summarize(tmp_path / "plan.json", tmp_path)
    assert len(rows) == 18
    assert (metrics["compared"], metrics["within_tolerance"], metrics["uninformative"]) == (18, 12, 2)
    assert (metrics["measurements"], metrics["measurements_within"],
            metrics["measurements_uninformative"]) == (12, 9, 1)
    assert metrics["replicate_spread"] == pytest.approx(2.1)
    assert metrics["tables"]["6"]["uninformative"] == 1


def test_judge_needs_one_comparison_per_entry():
    table = PLAN["tables"][0]
    with pytest.raises(ValueError, match="table 2"):
        judge(pd.DataFrame({"measured_pct": [1.0], "published_pct": [1.0]}), table, PLAN, _long(), 2.0)
